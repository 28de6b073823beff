"""Asking SLURM about the job this process runs in, through its commands (scontrol), never its private files.

A SLURM job is stopped with SIGTERM both when it ends for good (scancel, the time limit) and when it goes back to
the queue (scontrol requeue, preemption): only the job's record tells the two apart, since a requeue raises its
restart count before the signal comes.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess

log = logging.getLogger(__name__)

SCONTROL_TIMEOUT_S = 60  # scontrol waits for the controller, which may be busy; submitit allows the same


def job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def global_rank() -> int:
    """This task's rank in its job step (srun's SLURM_PROCID): 0 outside SLURM."""
    return int(os.environ.get("SLURM_PROCID", "0"))


def job_record(job: str) -> dict[str, str]:
    """`scontrol show job` as key=value pairs; empty when scontrol is missing or does not know the job."""
    try:
        shown = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job],
            capture_output=True,
            text=True,
            timeout=SCONTROL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("cannot ask SLURM about job %s: %s", job, err)
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout)) if shown.returncode == 0 else {}


def being_requeued() -> bool:
    """Whether this SLURM job is going back to the queue: its record counts one restart more than this run of it
    (SLURM_RESTART_COUNT, unset in the first run). scancel and the time limit leave the count alone."""
    job = job_id()
    if job is None:
        return False
    restarts = job_record(job).get("Restarts")
    return restarts is not None and int(restarts) > int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def request_requeue() -> bool:
    """`scontrol requeue` this job: SLURM then stops it with SIGTERM and starts it again later. True if asked."""
    job = job_id()
    if job is None:
        return False
    try:
        asked = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("cannot requeue SLURM job %s: %s", job, err)
        return False
    if asked.returncode != 0:
        log.error("SLURM refused to requeue job %s: %s", job, asked.stderr.strip())
        return False
    log.warning("requeued SLURM job %s: it stops now and resumes from checkpoints/last.ckpt when it runs again", job)
    return True
