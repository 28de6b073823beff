"""Checkpoints written whole or not at all, and a check that a checkpoint file can be resumed from.

Usage::

    removed = remove_orphaned_temp_files(output_dir / "checkpoints")  # at start: temp files of a killed save
    check_loadable(ckpt_path)  # before Trainer.fit(ckpt_path=...): one-line UnreadableCheckpoint
    trainer = L.Trainer(plugins=[AtomicCheckpointIO()], ...)

A save serializes the checkpoint in memory, writes it to ``.<name>.tmp-<pid>`` in the checkpoint's own
folder (a rename within one filesystem replaces the file atomically; from /tmp, which may be another
filesystem, it would be a copy), fsyncs it, renames it onto the target and fsyncs the folder. A crash at any point
leaves the previous checkpoint as it was; at worst a temp file remains, which the sweep removes.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from fsspec.core import url_to_fs
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_study.errors import UserError

TEMP_FILE = re.compile(r"\.(?P<target>.+)\.tmp-(?P<pid>\d+)")
# Every Lightning checkpoint has these, whatever the module and callbacks.
REQUIRED_KEYS = ("state_dict", "epoch", "global_step")
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# fsync of a folder is not supported everywhere (some network and FUSE filesystems); the rename stands.
UNSUPPORTED_ERRNOS = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR, errno.EACCES)


class CheckpointDiskFull(UserError):
    """No space (or quota) left to save a checkpoint; the previous checkpoint is intact."""


class UnreadableCheckpoint(UserError):
    """A checkpoint file that torch.load cannot read, or that is not a Lightning checkpoint."""


def temp_path(target: Path) -> Path:
    """Where a save of `target` by this process writes before the rename."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def open_for_writing(path: Path) -> BinaryIO:
    return open(path, "wb")


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened or fsynced)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as err:
        if err.errno in UNSUPPORTED_ERRNOS:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in UNSUPPORTED_ERRNOS:
            raise
    finally:
        os.close(fd)


def write_atomically(
    target: Path, data: bytes | memoryview, open_file: Callable[[Path], BinaryIO] = open_for_writing
) -> None:
    """Replace `target` by `data`, or leave it as it was; raises CheckpointDiskFull when the disk is full."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    try:
        with open_file(temp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            raise CheckpointDiskFull(no_space_message(folder, target.name, len(data), err)) from err
        raise
    fsync_folder(folder)


def no_space_message(folder: Path, name: str, size: int, err: OSError) -> str:
    try:
        free = f"{shutil.disk_usage(folder).free} bytes free"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left in {folder} to save {name} ({err.strerror or 'disk full'}): it needs {size} bytes, "
        f"{free}; the previous {name} is intact. Free space there, or write the run's output to a bigger disk"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves to a local path replace the file atomically (see the module docstring).

    `open_file` opens the temporary file for writing; tests pass one that fails part-way.
    Remote paths (s3://, gs://, ...) are saved by TorchCheckpointIO as before.
    """

    def __init__(self, open_file: Callable[[Path], BinaryIO] = open_for_writing) -> None:
        super().__init__()
        self.open_file = open_file

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        filesystem, local_path = url_to_fs(str(path))
        if storage_options is not None or "file" not in filesystem.protocol:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(Path(local_path), buffer.getbuffer(), self.open_file)


def remove_orphaned_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that saves killed before their rename left in `folder`; returns what was removed.

    Call it at start, before any save of this run can be in flight.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if TEMP_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --- the loader check -----------------------------------------------------------------------------------


def check_loadable(path: str | os.PathLike) -> None:
    """Raise UnreadableCheckpoint, in one line naming the file and what is wrong, unless `path` is a Lightning
    checkpoint that torch.load(weights_only=True) reads."""
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem:
        raise UnreadableCheckpoint(f"{path} {problem}")


def checkpoint_problem(path: Path) -> str:
    """What is wrong with `path` as a checkpoint, as the end of a sentence starting with its name; '' if nothing."""
    earlier = "; resume from an earlier checkpoint of the run, or start without ckpt_path"
    if not path.exists():
        return "does not exist: pass the path of a .ckpt file the run saved"
    if path.is_dir():
        return "is a folder, not a checkpoint file: pass the .ckpt file inside it (e.g. checkpoints/last.ckpt)"
    size = path.stat().st_size
    if size == 0:
        return f"is empty (0 bytes): its save was cut short{earlier}"
    with open(path, "rb") as f:
        head = f.read(512)
    if not zipfile.is_zipfile(path):
        return not_a_zip_problem(head, size) + earlier
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        return f"holds objects that torch.load(weights_only=True) refuses ({refusal(err)}){earlier}"
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as err:
        return f"is a damaged torch file: torch.load fails with {type(err).__name__}: {first_line(err)}{earlier}"
    if not isinstance(checkpoint, dict):
        return (
            f"holds a {type(checkpoint).__name__}, not a Lightning checkpoint (a dict with {', '.join(REQUIRED_KEYS)})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        found = ", ".join(str(key) for key in list(checkpoint)[:5]) or "nothing"
        return (
            f"is a torch file but not a Lightning checkpoint: it has no {', '.join(missing)} (it holds {found}); "
            "pass a .ckpt file that Trainer saved"
        )
    return ""


def not_a_zip_problem(head: bytes, size: int) -> str:
    if head.startswith(b"PK\x03\x04"):
        return f"is truncated ({size} bytes, the end of its zip archive is missing): its save was cut short"
    if head.startswith(b"\x80"):
        return "is a plain pickle (or a torch file older than 1.6), not a checkpoint, which is a zip archive"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # a multi-byte character cut off at the end of `head` is still text
            return f"is not a checkpoint (not a zip archive; it starts with {head[:8]!r})"
    return "is a text file, not a checkpoint (a zip archive written by torch.save)"


def refusal(err: pickle.UnpicklingError) -> str:
    """The reason in torch's several-paragraph weights_only error, e.g. 'Unsupported global: GLOBAL x.Y ...'."""
    found = re.search(r"WeightsUnpickler error: ([^\n]+?)(?:\. |\n|$)", str(err))
    return found.group(1) if found else first_line(err)


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
