"""How the entry points fail: one line for a user's mistake, a recorded failure inside a sweep, and a run
stopped by SIGTERM or SIGINT recorded as stopped (runs.signals), never as a success."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_study.atomic_files import DiskFull, write_text_atomically
from mnist_study.errors import UserError, first_line
from mnist_study.runs.artifacts import failure_file
from mnist_study.runs.locks import FolderInUse, held_folders
from mnist_study.runs.names import check_shared_run_folder
from mnist_study.runs.signals import Terminated, stop_guard, stop_record

log = logging.getLogger(__name__)
T = TypeVar("T")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(
    task: Callable[[DictConfig], T],
    cfg: DictConfig,
    describe_stop: Callable[[int, Path | None, str | None], str] | None = None,
) -> T | None:
    """Run a Hydra task. A single run turns a user error into `error: ...` and exit code 1 (the full
    trace with HYDRA_FULL_ERROR=1); a sweep job records any failure in its directory and returns None,
    so the other jobs still run and the report can list it. A run stopped by SIGTERM/SIGINT writes
    failed.txt (what the task has and how to go on: `describe_stop(signal, folder, sweep dir)`, by default
    train.py's checkpoints) and exits with 128 + the signal; in a sweep the jobs after it are not started."""
    guard = stop_guard()
    installed_here = guard.install()
    multirun = in_multirun()
    if installed_here and not multirun:  # called in-process (tests, notebooks): a stop of an earlier run is old
        guard.signum = None
    try:
        if guard.signum is not None:  # the sweep was stopped before this job
            return not_started(guard.signum)
        guard.in_task, guard.task_finished = True, False
        try:
            result = task(cfg)
        finally:
            guard.in_task = False
        guard.task_finished = True
        return result
    except FolderInUse as err:
        if not multirun:
            fail_in_one_line(err)
        log.warning("job %s skipped: %s", HydraConfig.get().job.override_dirname, err)
        return None
    except BaseException as err:
        signum = stop_signal_of(err)
        if signum is not None:
            return record_stop(signum, multirun, describe_stop)
        if not isinstance(err, Exception):
            raise
        if multirun:
            output_dir = Path(HydraConfig.get().runtime.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            message = one_line(err)
            write_record(output_dir / failure_file(process_rank()), message + "\n\n" + traceback.format_exc())
            log.error("job %s failed: %s", HydraConfig.get().job.override_dirname, message)
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(err, UserError):
            raise
        held_folders().discard_unused()  # refused inside the job: no run folder with nothing in it
        fail_in_one_line(err)
    finally:
        held_folders().release_all()
        if installed_here and not multirun:
            guard.uninstall()


def fail_in_one_line(err: UserError) -> None:
    print(f"error: {one_line(err)}", file=sys.stderr)
    raise SystemExit(1) from None


def stop_signal_of(err: BaseException) -> int | None:
    """The signal that `err` comes from, or None when it is an ordinary failure."""
    if isinstance(err, Terminated):
        return err.signum
    guard = stop_guard()
    if is_lightning_sigterm(err) and guard.signum is None:  # under SLURM SIGTERM is Lightning's alone
        guard.signum = signal.SIGTERM
    if isinstance(err, (SystemExit, KeyboardInterrupt)):  # Lightning's stop after SIGTERM / Ctrl-C
        return guard.signum
    return None


def is_lightning_sigterm(err: BaseException) -> bool:
    """Lightning's SIGTERMException (checked without importing Lightning, which q1 does not need)."""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return exceptions is not None and isinstance(err, exceptions.SIGTERMException)


def record_stop(
    signum: int, multirun: bool, describe: Callable[[int, Path | None, str | None], str] | None = None
) -> None:
    folder = held_folders().current or hydra_output_dir()
    sweep_dir = HydraConfig.get().sweep.dir if multirun else None
    if describe is None:  # train.py's runs: how far the checkpoints got, how to resume
        message = stop_record(signum, folder, sweep_dir, None if multirun else own_command())
    else:
        message = describe(signum, folder, sweep_dir)
    if folder is not None and folder.is_dir():
        write_record(folder / failure_file(process_rank()), message + "\n")
    if multirun:
        log.error("job %s %s", HydraConfig.get().job.override_dirname, message)
        return None
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(128 + signum) from None


def not_started(signum: int) -> None:
    """A sweep job after a stop: recorded as not run, so the report lists it and a re-run runs it."""
    if (folder := hydra_output_dir()) is not None and in_multirun():
        name = signal.Signals(signum).name
        sweep_dir = HydraConfig.get().sweep.dir
        message = (
            f"not started: the sweep was stopped by {name}; re-run the same command with hydra.sweep.dir={sweep_dir}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        write_record(folder / failure_file(process_rank()), message + "\n")
        log.error("job %s %s", HydraConfig.get().job.override_dirname, message)
        return None
    raise SystemExit(128 + signum)


def write_record(path: Path, text: str) -> None:
    """failed.txt, whole or not at all; a disk too full for it does not hide the failure it records (logged)."""
    try:
        write_text_atomically(path, text)
    except DiskFull as err:
        log.error("%s", err)


def process_rank() -> int:
    """This process's global rank in a DDP run, as Lightning knows it (0 where Lightning is not loaded, as in q1)."""
    utilities = sys.modules.get("lightning.pytorch.utilities")
    return int(getattr(utilities.rank_zero_only, "rank", 0)) if utilities is not None else 0


def hydra_output_dir() -> Path | None:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def own_command() -> str | None:
    """This run's command line as the user could type it again, without its ckpt_path."""
    if not HydraConfig.initialized():
        return None
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("ckpt_path=")]
    return shlex.join(["python", Path(sys.argv[0]).name, *overrides])


def one_line(err: BaseException) -> str:
    first = first_line(err) if str(err).strip() else ""
    return first if isinstance(err, UserError) and first else f"{type(err).__name__}: {first}"


# The flags with which Hydra still runs the jobs; any other flag (--help, --cfg, -cd, ...) is Hydra's business.
RUNNING_FLAGS = ("-m", "--multirun")


def refuse_bad_command_line(
    argv: Sequence[str], check_command_line: Callable[[list[str], Path], object], config_dir: Path
) -> None:
    """For an entry point, before hydra.main: `error: ...` and exit code 1 for a bad option of any job that
    `check_command_line(overrides, config_dir)` finds (it composes each job's config and raises UserError), or
    for processes of one run that would write into different folders."""
    if any(arg.startswith("-") and arg not in RUNNING_FLAGS for arg in argv):
        return
    try:
        check_shared_run_folder(argv)
        check_command_line([arg for arg in argv if arg not in RUNNING_FLAGS], config_dir)
    except UserError as err:
        fail_in_one_line(err)
    except KeyboardInterrupt:  # Ctrl-C while the command line is checked: nothing was started or written
        raise SystemExit(128 + signal.SIGINT) from None
