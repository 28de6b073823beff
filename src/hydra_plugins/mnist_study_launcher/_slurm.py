"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, with what a sweep needs on a real cluster.

- Before anything is submitted, every job's config is checked against the launcher (one process per SLURM task,
  each a DDP rank; a time limit longer than submitit's warning before it): a job that cannot work is one line.
- A time limit or a preemption requeues the job (max_num_timeout=3 instead of 0: submitit's USR2 handler
  requeues, and every USR2 of a job shorter than 50 min counts as one of these), and the requeued job resumes
  from its checkpoints/last.ckpt. A job stopped by the SIGTERM of a requeue (scontrol requeue, preemption,
  SIGUSR1: runs.signals) leaves no result, so the sweep waits for the requeued job.
- A failed run ends its SLURM job with an error (SLURM shows FAILED); the sweep still collects every job and
  writes its report, which lists the failures from the runs' failed.txt.
- The sweep waits by looking for the jobs' result files and asking `squeue` (never `sacct`, which fails on
  clusters without accounting and would leave a job killed with SIGKILL waited for forever).
- Ctrl-C or SIGTERM while it waits cancels the sweep's jobs (scancel; each records where it stopped), waits for
  them to end, and writes the report: re-running the command with hydra.sweep.dir resumes them.

Only the upstream launcher's public class and config are used; its launch() is written out again here, because
the waiting is the part that changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import config as submitit_config
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_study.config.launch import check_slurm_job, check_time_limit
from mnist_study.errors import UserError
from mnist_study.runs import slurm
from mnist_study.runs.artifacts import FAILURE_FILE, RESULT_FILE, failure_file
from mnist_study.runs.ending import fail_in_one_line
from mnist_study.runs.signals import signal_name, stop_guard

log = logging.getLogger(__name__)

# squeue's states of a job that may still run (or run again, after a requeue); any other state, or none, is an end.
ACTIVE_STATES = frozenset(
    {
        *("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"),
        *("REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"),
    }
)
RESULT_GRACE_S = 15  # a job that has ended may show its result file late on a shared filesystem (submitit waits 15 s)
STOP_WAIT_S = 120  # after Ctrl-C: how long the cancelled jobs get to record where they stopped (SLURM's KillWait: 30 s)
SQUEUE_TIMEOUT_S = 60


@dataclass
class StudySlurmConf(submitit_config.SlurmQueueConf):
    _target_: str = "hydra_plugins.mnist_study_launcher._slurm.StudySlurmLauncher"
    max_num_timeout: int = 3  # requeues after a time limit or preemption (the upstream default 0 fails the run)
    signal_delay_s: int = 120  # USR2 this long before the time limit; SLURM may send it up to 60 s early
    state_poll_s: int = 30  # how often the waiting sweep asks squeue whether a job without a result still runs


ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=StudySlurmConf, provider="mnist_study")

OWN_KEYS = {"submitit_folder", "max_num_timeout", "state_poll_s"}  # not sbatch parameters


class JobFailed(Exception):
    """Raised in a SLURM job whose run failed, so that the job ends with an error (SLURM: FAILED)."""


class StudySlurmLauncher(submitit_launcher.SlurmLauncher):
    # --- in the SLURM job ----------------------------------------------------------------------------------

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        stop_guard().install()  # SIGINT and SIGUSR1 handled from the start, not only once the run starts
        returned = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        if returned.status == JobStatus.FAILED:
            _ = returned.return_value  # raises the run's exception: submitit records it, the job exits with 1
        if returned.return_value is not None:
            return returned
        if stop_guard().signum == signal.SIGTERM and slurm.being_requeued():
            log.warning("SLURM requeues this job: it resumes from checkpoints/last.ckpt when it runs again")
            raise SystemExit(128 + signal.SIGTERM)  # no result: the sweep waits for the requeued job
        raise JobFailed(failure_summary(returned))

    # --- in the sweep --------------------------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        numbered = [(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        configs = [self.job_config(overrides, number) for number, overrides in numbered]
        try:
            check_time_limit(self.params["timeout_min"], self.params["signal_delay_s"])
            for cfg in configs:
                check_slurm_job(cfg, self.params["tasks_per_node"], self.params["nodes"])
            if missing := [command for command in ("sbatch", "srun", "squeue") if shutil.which(command) is None]:
                raise UserError(
                    f"hydra/launcher=slurm needs SLURM's commands, and this machine lacks {', '.join(missing)}: start "
                    "the sweep where jobs are submitted (a login node), or use hydra/launcher=submitit_local"
                )
        except UserError as err:
            fail_in_one_line(err)

        # submitit configures its own logging on import unless told not to: its records then go through Hydra's
        # (hydra.hydra_logging.loggers.submitit in conf/train.yaml) here and into train.log in the jobs.
        os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
        import submitit

        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        executor.update_parameters(**self.executor_parameters())
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        for number, overrides in numbered:
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        arguments = [
            (overrides, "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state())
            for number, overrides in numbered
        ]
        jobs = executor.map_array(self, *zip(*arguments, strict=True))
        log.info(
            "submitted SLURM jobs %s; logs in %s (squeue, scancel <id>)",
            " ".join(job.job_id for job in jobs),
            sweep_dir / ".submitit",
        )
        watches = [
            JobWatch(job, overrides, run_dir_of(cfg))
            for job, (_, overrides), cfg in zip(jobs, numbered, configs, strict=True)
        ]
        wait_for(watches, int(self.params["state_poll_s"]), sweep_dir)
        return [watch.returned or stopped_return(watch.overrides) for watch in watches]

    def job_config(self, overrides: list[str], number: int) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = number
        return cfg

    def executor_parameters(self) -> dict[str, Any]:
        """The launcher's keys as submitit's AutoExecutor takes them (as the upstream launcher passes them)."""
        shared = set(OmegaConf.structured(submitit_config.BaseQueueConf).keys())
        return {
            key if key in shared else f"slurm_{key}": value for key, value in self.params.items() if key not in OWN_KEYS
        }


def failure_summary(returned: JobReturn) -> str:
    """The first line of this rank's failed.txt, with its run folder."""
    folder = Path(str(OmegaConf.select(returned.hydra_cfg, "hydra.runtime.output_dir", default=".")))
    record = folder / failure_file(slurm.global_rank())
    first = record.read_text().splitlines()[0] if record.is_file() else "no record (failed.txt) was written"
    return f"{folder}: {first}"


def run_dir_of(cfg: DictConfig) -> Path | None:
    """The job's folder, as the job itself will name it; None if its name needs what only the job knows."""
    try:
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    except Exception:  # e.g. a subdir of ${hydra.job.id}: the SLURM job id, unknown before submission
        return None


def stopped_return(overrides: list[str]) -> JobReturn:
    """A job without a result, as a JobReturn that Hydra's sweeper accepts: the report reads the run's folder."""
    returned = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
    returned.return_value = None
    return returned


class JobWatch:
    """One submitted job, seen from the sweep: its result files and what squeue says about it."""

    def __init__(self, job: Any, overrides: list[str], run_dir: Path | None) -> None:
        self.job, self.overrides, self.run_dir = job, overrides, run_dir
        self.returned: JobReturn | None = None
        self.done = False
        self.ended_since: float | None = None  # when squeue first showed it ended (or no longer knew it)

    def has_results(self) -> bool:
        return all(self.job.task(task).paths.result_pickle.exists() for task in range(self.job.num_tasks))

    def collect(self) -> None:
        """Read the tasks' results (each result file exists): rank 0's JobReturn, or None when a task failed."""
        from submitit.core.utils import UncompletedJobError  # FailedJobError is one

        self.done = True
        try:
            outcomes = [self.job.task(task).results()[0] for task in range(self.job.num_tasks)]
        except UncompletedJobError:
            log.error("SLURM job %s: %s", self.job.job_id, self.record_line())
            return
        self.returned = outcomes[0]

    def end_without_result(self, state: str, why: str) -> None:
        """The job ended and left no result file: a crash, SIGKILL, or a cancel before it ran. Its run folder
        says so, unless the run wrote its own record."""
        self.done = True
        sweep_dir = self.run_dir.parent if self.run_dir is not None else None
        message = (
            f"ended without a result ({why}; SLURM's last state: {state}); its log: "
            f"{self.job.task(0).paths.stderr}; re-run the same command with hydra.sweep.dir={sweep_dir} to resume it"
        )
        log.error("SLURM job %s %s", self.job.job_id, message)
        if self.run_dir is None or (self.run_dir / RESULT_FILE).exists() or (self.run_dir / FAILURE_FILE).exists():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / FAILURE_FILE).write_text(message + "\n")

    def record_line(self) -> str:
        record = self.run_dir / FAILURE_FILE if self.run_dir is not None else None
        if record is not None and record.is_file():
            return record.read_text().splitlines()[0]
        return f"see {self.job.task(0).paths.stderr}"

    def refresh_listing(self) -> None:
        """Make a shared filesystem show the result files now (submitit's own trick: touching the folder)."""
        folder = self.job.task(0).paths.folder
        with contextlib.suppress(OSError):
            folder.chmod(folder.stat().st_mode)


def job_states(job_ids: list[str]) -> dict[str, str] | None:
    """squeue's state of each job it still knows (finished ones for a few minutes: MinJobAge); None when squeue
    cannot answer (e.g. the controller is busy), so that nothing is concluded from its silence."""
    command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i %T", f"--jobs={','.join(job_ids)}"]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return {} if "Invalid job id" in listed.stderr else None
    return dict(line.split(maxsplit=1) for line in listed.stdout.splitlines() if " " in line.strip())


def wait_for(watches: list[JobWatch], poll_s: int, sweep_dir: Path) -> None:
    """Until every job has a result or has ended without one; on Ctrl-C/SIGTERM, cancel the rest first."""
    guard = stop_guard()
    cancelled_by: int | None = None
    deadline = float("inf")
    last_poll = float("-inf")
    silent_squeue = False
    while (waiting := [watch for watch in watches if not watch.done]) and time.monotonic() < deadline:
        for watch in waiting:
            if watch.has_results():
                watch.collect()
        if cancelled_by is None and guard.signum is not None:
            cancelled_by, deadline, poll_s = guard.signum, time.monotonic() + STOP_WAIT_S, 2
            cancel(waiting, guard.signum, sweep_dir)
        now = time.monotonic()
        if now - last_poll >= poll_s and (waiting := [watch for watch in watches if not watch.done]):
            last_poll = now
            states = job_states([watch.job.job_id for watch in waiting])
            if states is None and not silent_squeue:
                log.warning("squeue does not answer; the sweep goes on waiting for its jobs' result files")
            silent_squeue = states is None
            for watch in waiting if states is not None else []:
                state = states.get(watch.job.job_id, "gone from squeue")
                if state in ACTIVE_STATES:
                    watch.ended_since = None
                elif watch.ended_since is None:
                    watch.ended_since = now
                    watch.refresh_listing()
                elif now - watch.ended_since >= RESULT_GRACE_S and not watch.has_results():
                    watch.end_without_result(state, cancelled_why(cancelled_by) or "killed or crashed")
        time.sleep(1)


def cancelled_why(signum: int | None) -> str | None:
    return f"cancelled when the sweep was stopped by {signal_name(signum)}" if signum is not None else None


def cancel(watches: list[JobWatch], signum: int, sweep_dir: Path) -> None:
    ids = " ".join(watch.job.job_id for watch in watches)
    log.warning(
        "%s: cancelling the sweep's SLURM jobs %s (scancel); each records where it stopped, and re-running the same "
        "command with hydra.sweep.dir=%s resumes them",
        signal_name(signum),
        ids,
        sweep_dir,
    )
    for watch in watches:
        watch.job.cancel(check=False)
