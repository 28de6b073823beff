"""For the tests against a real SLURM cluster (tests/test_slurm.py): callbacks that SLURM jobs load with
+callbacks.<name>=..., and the test's side: is a cluster there, what state is a job in, waiting on files with a
deadline (no sleeps as synchronization: the waits end on what they wait for)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

# --- in the job ----------------------------------------------------------------------------------------------


class HoldAtEpoch(Callback):
    """The first time a run reaches the start of epoch `epoch` (its earlier epochs saved in last.ckpt), write
    `marker` ("<pid> <SLURM job id>") and hold there until SIGTERM (Lightning's flag), an exception from a signal
    handler (submitit's USR2) or `limit_s`. A requeued or re-run job finds the marker and does not hold."""

    def __init__(self, marker: str, epoch: int = 1, limit_s: float = 900) -> None:
        self.marker, self.epoch, self.limit_s = Path(marker), epoch, limit_s

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.current_epoch != self.epoch or self.marker.exists():
            return
        partial = self.marker.with_suffix(".partial")
        partial.write_text(f"{os.getpid()} {os.environ.get('SLURM_JOB_ID', '')}\n")
        partial.replace(self.marker)
        deadline = time.monotonic() + self.limit_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.2)  # the job waits for a signal here; the test never sleeps


def hold_override(marker: Path, epoch: int = 1) -> str:
    return f"+callbacks.hold={{_target_:tests.cluster.HoldAtEpoch,marker:'{marker}',epoch:{epoch}}}"


FAILURE = "a failure inside the job (tests.cluster.FailAtStart)"
FAIL_OVERRIDE = "+callbacks.fail={_target_:tests.cluster.FailAtStart}"


class FailAtStart(Callback):
    """Every rank raises as training starts: a failure that no check before the job can see."""

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        raise RuntimeError(FAILURE)


class RecordRank(Callback):
    """Each rank writes <folder>/rank<r>-epoch<e>.json: its world size, cluster environment and training images."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        environment = trainer.strategy.cluster_environment
        record = {
            "world_size": trainer.world_size,
            "environment": type(environment).__name__ if environment is not None else None,
            "images": int(module.metrics["train_metric"].count),  # before the module resets it
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.json").write_text(json.dumps(record))


def record_rank_override(folder: Path) -> str:
    return f"+callbacks.record_rank={{_target_:tests.cluster.RecordRank,folder:'{folder}'}}"


# --- the test's side -----------------------------------------------------------------------------------------


def cluster_problem(wait_s: float = 120) -> str | None:
    """Why the SLURM tests cannot run here, or None: sinfo must answer and show a node that takes jobs (within
    `wait_s`: the jobs of the test before may still be ending)."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found): tools/slurm/local-cluster.sh start makes a one-node cluster"
    deadline = time.monotonic() + wait_s
    while True:
        shown = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, check=False)
        if shown.returncode != 0:
            return f"sinfo fails: {shown.stderr.strip()}"
        if {"idle", "mix"} & set(shown.stdout.split()):
            return None
        if time.monotonic() > deadline:
            return f"no SLURM node is idle within {wait_s} s (sinfo says: {' '.join(shown.stdout.split())})"
        time.sleep(2)  # polling SLURM's answer


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL")


def ended_state(job_id: str, timeout: float = 120) -> str:
    """The job's final JobState, once it has one (a job's record lags behind its tasks' exit by a moment)."""
    deadline = time.monotonic() + timeout
    while (state := job_field(job_id, "JobState")) not in ENDED and time.monotonic() < deadline:
        time.sleep(1)  # polling SLURM's answer
    return str(state)


def job_field(job_id: str, name: str) -> str | None:
    """A field of `scontrol show job` (JobState, Restarts, ExitCode): SLURM keeps ended jobs for MinJobAge."""
    shown = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True)
    for pair in shown.stdout.split():
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


def slurm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a sweep whose jobs must import this checkout (sbatch exports it to the jobs), with one
    thread per process as in the reference runs, so that their arithmetic is the same."""
    root = Path(__file__).resolve().parents[1]
    paths = [str(root / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra or {})}


class Process:
    """A script run in the background, its output in files (so no pipe fills up)."""

    def __init__(self, *args: str, cwd: Path, log_dir: Path, env: dict[str, str]) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        number = len(list(log_dir.glob("stdout-*")))
        self.stdout_path, self.stderr_path = log_dir / f"stdout-{number}.txt", log_dir / f"stderr-{number}.txt"
        environment = {**os.environ, **env}
        environment.pop("HYDRA_FULL_ERROR", None)
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=environment, stdout=stdout, stderr=stderr
            )

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"still running after {timeout} s:\n{self.output()[-4000:]}") from None


def wait_for_file(path: Path, process: Process, timeout: float) -> str:
    """The file's text once it exists; fails if `process` ends first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return path.read_text()
        if process.proc.poll() is not None:
            code = process.proc.returncode
            raise AssertionError(f"ended (exit {code}) before {path} appeared:\n{process.output()[-4000:]}")
        time.sleep(0.5)  # polling a file the job writes, not waiting for time to pass
    raise AssertionError(f"{path} did not appear within {timeout} s:\n{process.output()[-4000:]}")
