"""Stopped runs look stopped: SIGTERM (SLURM preemption, `timeout`, `docker stop`) and SIGINT (Ctrl-C).

`StopGuard` records the first signal. Inside `Trainer.fit`/`test`, Lightning's own SIGTERM handler runs in front
of ours and ends the loop at the next step boundary (never inside a checkpoint save); elsewhere ours raises
`Terminated`. runs.ending then writes `failed.txt` in the run folder and exits with 128 + the signal (143, 130);
in a sweep the remaining jobs are not started and the report is still written. Under SLURM (`SLURM_JOB_ID` set)
SIGTERM is left to Lightning (which stops at the next step) and to submitit; SIGUSR1, the signal Lightning's own
auto-requeue would take (turned off by training.pipeline, so that no mid-step HPC checkpoint is written), asks SLURM
to requeue the job: the requeue's SIGTERM then stops the run, which resumes from its last.ckpt when it runs again
(docs/SCALING-OUT.md).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mnist_study.runs import slurm
from mnist_study.runs.names import command_line_override

log = logging.getLogger(__name__)


class Terminated(BaseException):
    """Raised by the SIGTERM handler where no Trainer stands in front of it. A BaseException, like
    KeyboardInterrupt, so that `except Exception` clauses do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal_name(signum)}")
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


class StopGuard:
    """Records the first SIGTERM or SIGINT of this process and stops the task that runs.

    While a task runs (`in_task`): SIGINT raises KeyboardInterrupt, as Python's default handler does
    (Lightning turns it into a graceful stop); SIGTERM raises Terminated, unless a Trainer is running -
    Lightning then installs its own handler in front of this one (and calls it), and ends the loop at the
    next step boundary by raising SIGTERMException. Outside a task (Hydra composing, between the jobs of a
    sweep, while the report is written) a signal is only recorded: the sweep then starts no further job.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_task = False
        self.task_finished = False  # the last task returned, its results written; no other task started since
        self.previous: dict[int, Any] = {}

    @property
    def handled_signals(self) -> tuple[int, ...]:
        # Under SLURM, SIGTERM belongs to Lightning (a stop at the next step) and to submitit.
        return (signal.SIGINT, signal.SIGUSR1) if under_slurm() else (signal.SIGTERM, signal.SIGINT)

    def install(self) -> bool:
        """Install the handlers (main thread only); False when they already were."""
        if self.previous or threading.current_thread() is not threading.main_thread():
            return False
        for signum in self.handled_signals:
            self.previous[signum] = signal.signal(signum, self.handle)
        return True

    def uninstall(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1:  # under SLURM: a requeue asked for (scancel --signal=USR1); every rank gets it
            log.warning("received SIGUSR1: asking SLURM to requeue the job")
            if slurm.global_rank() == 0:
                slurm.request_requeue()
            return
        if self.signum is not None:
            return  # already stopping: a second signal must not cut the clean-up short
        self.signum = signum
        if self.task_finished:  # e.g. Ctrl-C while Hydra ends the run: the exit code still tells of the signal
            log.warning(
                "received %s after the run had finished: its results are whole; nothing further is started (exit "
                "code %d)",
                signal_name(signum),
                128 + signum,
            )
        else:
            log.warning("received %s: stopping", signal_name(signum))
        if not self.in_task:
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signal.getsignal(signum) != self.handle:  # a Trainer's handler called this one: it stops at the next step
            return
        raise Terminated(signum)

    @property
    def exit_code(self) -> int | None:
        """128 + the signal, the shell's convention for a process ended by it; None if none came."""
        return None if self.signum is None else 128 + self.signum


@functools.cache
def stop_guard() -> StopGuard:
    """The process's guard: its signal handlers are process-wide, so there is one, made on first use."""
    return StopGuard()


def stop_record(signum: int, folder: Path | None, sweep_dir: str | None, command: str | None) -> str:
    """The first line of failed.txt for a run stopped by `signum`: how far it got and how to go on.
    `sweep_dir` for a sweep job; `command` (the run's own command line) for a single run."""
    name = signal_name(signum)
    last = folder / "checkpoints" / "last.ckpt" if folder is not None else None
    epoch = saved_epoch(last) if last is not None else None
    if last is None or epoch is None:
        again = f"re-run the same command with hydra.sweep.dir={sweep_dir}" if sweep_dir else "run the same command"
        return f"terminated by {name} before its first checkpoint; {again} to start it over"
    if sweep_dir:
        how = f"re-run the same command with hydra.sweep.dir={sweep_dir} to resume it"
    else:
        resume = command_line_override("ckpt_path", last.absolute())  # quoted where the folder's name has , or =
        how = f"resume it with: {command or 'python train.py <the same options>'} {resume}"
    return f"terminated by {name} after epoch {epoch + 1} (checkpoints/last.ckpt holds it); {how}"


def saved_epoch(checkpoint: Path) -> int | None:
    """The checkpoint's epoch as Lightning counts it (from 0)."""
    if not checkpoint.is_file():
        return None
    import torch  # only where a checkpoint exists, so after training started: q1 and report.py never load it

    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # an unreadable checkpoint counts as none: the re-run starts over
        return None


def run_main(main: Callable[[], Any]) -> None:
    """Run a Hydra main function with the stop guard installed; a run or sweep stopped by a signal exits with
    128 + the signal (after the sweep's report), whatever exit code its last step chose."""
    guard = stop_guard()
    guard.install()
    try:
        main()
    except SystemExit as exit_:
        if guard.exit_code is not None and exit_.code in (None, 0, 1):
            raise SystemExit(guard.exit_code) from None
        raise
    if guard.exit_code is not None:
        raise SystemExit(guard.exit_code)
