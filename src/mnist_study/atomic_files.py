"""Files written whole or not at all: a temporary file beside the target, fsynced, renamed onto it.

A rename within one folder replaces the file atomically (from /tmp, which may be another filesystem, it would
be a copy); fsyncing the file before and the folder after makes the result survive a crash. At any point of a
failure the previous file is as it was; at worst a temp file `.<name>.tmp-<pid>-<random>` remains, which
`remove_orphaned_temp_files` deletes (train.py calls it on the run's checkpoint folder before training).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mnist_study.errors import UserError

# .<name>.tmp-<pid>-<random>: unique even for writers with one pid on two hosts of a shared filesystem
TEMP_FILE = re.compile(r"\.(?P<target>.+)\.tmp-(?P<pid>\d+)(-[0-9a-f]+)?")
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# fsync of a folder is not supported everywhere (some network and FUSE filesystems); the rename stands.
UNSUPPORTED_ERRNOS = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR, errno.EACCES)


class DiskFull(UserError):
    """No space (or quota) left to write a file; the previous file, if any, is intact."""


def temp_path(target: Path) -> Path:
    """Where a write of `target` goes before the rename."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


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
    target: Path, data: bytes | memoryview, advice: str, open_file: Callable[[Path], BinaryIO] | None = None
) -> None:
    """Replace `target` by `data`, or leave it as it was. A full disk raises DiskFull, whose message ends with
    `advice` (what to do about it). `open_file` opens the temp file (default: open_for_writing, looked up at each
    call, so that tests can replace it)."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    try:
        with (open_file or open_for_writing)(temp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            raise DiskFull(no_space_message(target, len(data), err) + advice) from err
        raise
    fsync_folder(folder)


def write_text_atomically(target: Path, text: str, advice: str = "Free space there, or write to a bigger disk") -> None:
    """write_atomically for text, in UTF-8."""
    write_atomically(target, text.encode(), advice)


def write_json_atomically(
    target: Path, value: Any, advice: str = "Free space there, or write to a bigger disk"
) -> None:
    """`value` as strict JSON, indented, written whole: a NaN or infinite number (a diverged network's loss) is
    written as null, which every JSON parser reads; Python's json would write NaN, which most refuse."""
    text = json.dumps(finite_or_null(value), indent=1, allow_nan=False)
    write_atomically(target, (text + "\n").encode(), advice)


def finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def save_figure_atomically(figure: Any, target: Path, advice: str = "Free space there", **savefig: Any) -> None:
    """A matplotlib figure rendered in memory, then written whole (savefig writes a file piece by piece)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=target.suffix.lstrip(".") or "png", **savefig)
    write_atomically(target, buffer.getbuffer(), advice)


def copy_atomically(source: Path, target: Path, advice: str = "Free space there") -> None:
    write_atomically(target, source.read_bytes(), advice)


def no_space_message(target: Path, size: int, err: OSError) -> str:
    try:
        free = f"{shutil.disk_usage(target.parent).free} bytes free"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {target.name} is intact" if target.exists() else f"no partial {target.name} is left"
    return (
        f"no space left in {target.parent} to save {target.name} ({err.strerror or 'disk full'}): it needs {size} "
        f"bytes, {free}; {kept}. "
    )


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
