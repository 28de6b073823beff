"""One run per folder: a run holds an `fcntl.flock` on `<run folder>/run.lock` while it trains.

A second process that would train in the same folder is refused (a single run) or skips the job (a sweep). The
operating system releases the lock when the holder dies, so the lock of a killed run is simply taken over; a run
that ends (finished, failed or stopped) deletes its lock file.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_study.errors import UserError
from mnist_study.runs.artifacts import LOCK_FILE

log = logging.getLogger(__name__)


class FolderInUse(UserError):
    """Another live process trains in this folder."""


class FolderLock:
    """An exclusive flock on `<folder>/run.lock`, held until release() or the end of the process. release()
    deletes the file: a finished run's folder keeps no lock file; one left behind is a killed run's."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.created = not folder.exists()  # by this process, for this run
        folder.mkdir(parents=True, exist_ok=True)
        while True:
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
            if self.holds_the_folders_file():
                break
            os.close(self.fd)  # its holder deleted the file while releasing it: lock the folder's file anew
        if previous := read_holder(self.fd):  # released by the OS when its process died, never by itself
            log.info("%s: taking over the lock of a run that ended without releasing it (%s)", folder, previous)
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)

    def holds_the_folders_file(self) -> bool:
        try:
            named, held = os.stat(self.folder / LOCK_FILE), os.fstat(self.fd)
        except FileNotFoundError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        if self.fd < 0:
            return
        (self.folder / LOCK_FILE).unlink(missing_ok=True)  # while still locked: no one else holds this file
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


def same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


class HeldFolders:
    """The folders that the current run of this process holds: its own, and its checkpoint's when it resumes."""

    def __init__(self) -> None:
        self.locks: list[FolderLock] = []

    def start_run(self, folder: Path) -> None:
        """Lock `folder` for the run this process starts now, after releasing what an earlier run here held
        (a lock on `folder` itself, taken by LockRunFolder, is kept)."""
        for lock in [lock for lock in self.locks if not same_folder(lock.folder, folder)]:
            self.locks.remove(lock)
            lock.release()
        self.hold(folder)

    def hold(self, folder: Path) -> None:
        """Lock `folder` too. Only global rank 0 locks: the other ranks of a DDP run (started by Lightning or
        srun) share rank 0's folder."""
        from lightning.pytorch.utilities import rank_zero_only  # imported by train() already; q1 never locks

        if rank_zero_only.rank != 0 or any(same_folder(lock.folder, folder) for lock in self.locks):
            return
        self.locks.append(FolderLock(folder))

    def release_all(self) -> None:
        while self.locks:
            self.locks.pop().release()

    def discard_unused(self) -> None:
        """Release the locks and delete each folder that this process created for a run that then stopped before
        writing anything but Hydra's files (its .hydra/ and job log) and the event file that Lightning opens before
        the data is set up: a refused run leaves no empty run folder."""
        created = [lock.folder for lock in self.locks if lock.created]
        self.release_all()
        for folder in created:
            if all(discardable(path) for path in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)

    @property
    def current(self) -> Path | None:
        """Where the current run writes: the last folder it locked."""
        return self.locks[-1].folder if self.locks else None


def discardable(path: Path) -> bool:
    return path.name in (".hydra", LOCK_FILE) or path.suffix == ".log" or path.name.startswith("events.out.tfevents.")


@functools.cache
def held_folders() -> HeldFolders:
    """This process's locks (flocks belong to the process), made on first use."""
    return HeldFolders()


class LockRunFolder(Callback):
    """Hydra callback (conf/train.yaml): a single run locks hydra.run.dir before Hydra writes its .hydra/
    files there, so a refused second run leaves the first one's folder as it was."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            held_folders().start_run(Path(config.hydra.run.dir))
        except FolderInUse as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
