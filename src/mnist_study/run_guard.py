"""What keeps runs apart and makes a stopped run look stopped.

- **Folder locks.** A run holds an `fcntl.flock` on `<run folder>/run.lock` while it trains; a second
  process that would train in the same folder is refused (a single run) or skips the job (a sweep). The
  operating system releases the lock when the holder dies, so the lock of a killed run is simply taken over.
- **Stop signals.** SIGTERM (SLURM preemption, `timeout`, `docker stop`) and SIGINT (Ctrl-C) are recorded
  by `StopGuard`. Inside `Trainer.fit`/`test`, Lightning's own SIGTERM handler runs in front of ours and
  ends the loop at the next step boundary (never inside a checkpoint save); elsewhere ours raises
  `Terminated`. cli.run_task then writes `failed.txt` in the run folder and exits with 128 + the signal
  (143, 130); in a sweep the remaining jobs are not started and the report is still written. Under SLURM
  (`SLURM_JOB_ID` set) SIGTERM is left to Lightning's SLURM handling (auto-requeue), untouched.
- **Job folder names.** The `job_dirname` resolver keeps a sweep job's folder name (Hydra's
  override_dirname) under the file system's 255-byte limit.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_study.errors import UserError

LOCK_FILE = "run.lock"
MAX_NAME_BYTES = 255  # a file name's limit on ext4, xfs, btrfs, NFS
HASH_CHARS = 10
log = logging.getLogger(__name__)


# --- folder locks ---------------------------------------------------------------------------------------


class FolderInUse(UserError):
    """Another live process trains in this folder."""


class FolderLock:
    """An exclusive flock on `<folder>/run.lock`, held until release() or the end of the process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(self.fd)
            os.close(self.fd)
            raise FolderInUse(
                f"{folder} is in use by another live run ({holder or 'its process is alive'}): wait for it to "
                "finish or stop it; two runs in one folder would overwrite each other's checkpoints"
            ) from None
        if previous := read_holder(self.fd):  # released by the OS when its process died, never by itself
            log.info("%s: taking over the lock of a run that ended without releasing it (%s)", folder, previous)
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)

    def release(self) -> None:
        if self.fd < 0:
            return
        os.ftruncate(self.fd, 0)  # an empty lock file: released properly
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1


def read_holder(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()


def holder_of(folder: Path) -> str | None:
    """Who holds `folder` ("pid 123 on host since ..."), or None when no live process does (for reports)."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(fd) or "a live process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


held_folders: list[FolderLock] = []  # the folders the current run of this process holds


def start_run(folder: Path) -> None:
    """Lock `folder` for the run this process starts now, after releasing what an earlier run here held
    (a lock on `folder` itself, taken by LockRunFolder, is kept)."""
    for lock in [lock for lock in held_folders if not same_folder(lock.folder, folder)]:
        held_folders.remove(lock)
        lock.release()
    hold_run_folder(folder)


def same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def hold_run_folder(folder: Path) -> None:
    """Lock `folder` too (a resumed run writes into its checkpoint's folder). Only global rank 0 locks: the
    other ranks of a DDP run (started by Lightning or srun) share rank 0's folder."""
    from lightning.pytorch.utilities import rank_zero_only  # imported by train() already; q1 never locks

    if rank_zero_only.rank != 0 or any(same_folder(lock.folder, folder) for lock in held_folders):
        return
    held_folders.append(FolderLock(folder))


def release_run_folders() -> None:
    while held_folders:
        held_folders.pop().release()


def current_run_folder() -> Path | None:
    """Where the current run writes: the last folder it locked."""
    return held_folders[-1].folder if held_folders else None


class LockRunFolder(Callback):
    """Hydra callback (conf/train.yaml): a single run locks hydra.run.dir before Hydra writes its .hydra/
    files there, so a refused second run leaves the first one's folder as it was."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            start_run(Path(config.hydra.run.dir))
        except FolderInUse as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None


# --- stop signals ---------------------------------------------------------------------------------------


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
        self.previous: dict[int, Any] = {}

    @property
    def handled_signals(self) -> tuple[int, ...]:
        # Under SLURM, SIGTERM belongs to Lightning's SLURMEnvironment (auto-requeue) and to submitit.
        return (signal.SIGINT,) if under_slurm() else (signal.SIGTERM, signal.SIGINT)

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
        if self.signum is not None:
            return  # already stopping: a second signal must not cut the clean-up short
        self.signum = signum
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


guard = StopGuard()  # one per process: its signal handlers are process-wide


def stop_record(signum: int, folder: Path | None, sweep_dir: str | None, command: str | None) -> str:
    """The first line of failed.txt for a run stopped by `signum`: how far it got and how to go on.
    `sweep_dir` for a sweep job; `command` (the run's own command line) for a single run."""
    name = signal_name(signum)
    epoch = saved_epoch(folder / "checkpoints" / "last.ckpt") if folder is not None else None
    if epoch is None:
        again = f"re-run the same command with hydra.sweep.dir={sweep_dir}" if sweep_dir else "run the same command"
        return f"terminated by {name} before its first checkpoint; {again} to start it over"
    last = folder / "checkpoints" / "last.ckpt"  # type: ignore[operator]
    if sweep_dir:
        how = f"re-run the same command with hydra.sweep.dir={sweep_dir} to resume it"
    else:
        how = f"resume it with: {command or 'python train.py <the same options>'} ckpt_path={last.absolute()}"
    return f"terminated by {name} after epoch {epoch} (checkpoints/last.ckpt holds it); {how}"


def saved_epoch(checkpoint: Path) -> int | None:
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
    guard.install()
    try:
        main()
    except SystemExit as exit_:
        if guard.exit_code is not None and exit_.code in (None, 0, 1):
            raise SystemExit(guard.exit_code) from None
        raise
    if guard.exit_code is not None:
        raise SystemExit(guard.exit_code)


# --- job folder names -----------------------------------------------------------------------------------


def job_dirname(override_dirname: str, limit: int = MAX_NAME_BYTES) -> str:
    """`override_dirname` when it fits in `limit` bytes, else its start and a hash of the whole (the full
    overrides stay in the job's .hydra/overrides.yaml). Deterministic: the same command finds the same folder."""
    encoded = override_dirname.encode()
    if len(encoded) <= limit:
        return override_dirname
    digest = hashlib.sha256(encoded).hexdigest()[:HASH_CHARS]
    head = encoded[: limit - HASH_CHARS - 1].decode(errors="ignore")
    return f"{head}_{digest}"


def split_overrides(override_dirname: str) -> list[str]:
    """Hydra's `key=value,key=value` back into its items; commas inside [...] or {...} belong to a value."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(override_dirname):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(override_dirname[start:i])
            start = i + 1
    items.append(override_dirname[start:])
    return [item for item in items if item]


def run_name(model: str, regularizer: str, override_dirname: str, limit: int = MAX_NAME_BYTES) -> str:
    """A run's folder (and TensorBoard) name: the network first, then the run's other overrides:
    `cnn-bn`, `cnn-bn,seed=1`, `mlp-none,optimizer.lr=0.002`; within `limit` bytes (see job_dirname)."""
    network = ("model", "regularizer")
    others = [o for o in split_overrides(override_dirname) if o.split("=", 1)[0].lstrip("+~") not in network]
    return job_dirname(",".join([f"{model}-{regularizer}", *others]), limit)


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
