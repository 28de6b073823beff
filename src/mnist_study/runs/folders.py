"""A run folder across attempts: it can be written, its finished run is never taken over by another configuration,
a damaged result is set aside rather than read, and a run that trains from scratch starts from a folder emptied of
an earlier attempt's files (moved into previous-<time>/, never deleted)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_study.errors import UserError
from mnist_study.runs.artifacts import CONFUSION, FAILURE_FILE, MISTAKES, OTHER_RANKS_FAILURE_FILES, RESULT_FILE

log = logging.getLogger(__name__)

PREVIOUS = "previous-"  # previous-<time>/: what an earlier attempt left, moved there by a retrain from scratch
DAMAGED = ".damaged"  # result.json.damaged: a result file that did not read back, kept for a look
# What a run writes into its folder (and what a retrain from scratch moves aside); Hydra's .hydra/ and job log,
# the lock and earlier previous-*/ folders stay.
RUN_OUTPUTS = (
    "events.out.tfevents.*", "checkpoints", f"{RESULT_FILE}*", FAILURE_FILE, OTHER_RANKS_FAILURE_FILES,
    f"{CONFUSION}.png", f"{MISTAKES}.png", "hparams.yaml", "epochs.csv", "hpc_ckpt_*.ckpt",
)  # fmt: skip
# result.json's keys that readers rely on, with their types
RESULT_KEYS: dict[str, tuple[type, ...]] = {
    "test/acc": (int, float), "test/loss": (int, float), "model": (str,), "regularizer": (str,), "seed": (int,),
    "parameters": (int,),
}  # fmt: skip


class DamagedResult(UserError):
    """A result.json that does not read back as a run's result (cut short, edited, another program's)."""


def read_result(folder: Path) -> dict[str, Any] | None:
    """The run's result.json, None if there is none; DamagedResult if it does not read back whole."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedResult(f"{path} is damaged (not JSON: {err})") from None
    if not isinstance(result, dict):
        raise DamagedResult(f"{path} is damaged (a JSON {type(result).__name__}, not an object)")
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise DamagedResult(f"{path} is damaged (it has no {', '.join(missing)})")
    for key, types in RESULT_KEYS.items():
        if isinstance(result[key], bool) or not isinstance(result[key], types):
            raise DamagedResult(f"{path} is damaged ({key} is {result[key]!r})")
    return result


def finished_result(folder: Path) -> dict[str, Any] | None:
    """The result of the run finished in `folder`, or None: none there, or a damaged one, which is set aside
    (result.json.damaged) so that the job trains again instead of failing on it forever."""
    try:
        return read_result(folder)
    except DamagedResult as err:
        kept = set_aside(folder / RESULT_FILE)
        log.warning("%s: the job is not finished; it runs again (the damaged file is kept as %s)", err, kept.name)
        return None


def set_aside(path: Path, suffix: str = DAMAGED) -> Path:
    """Rename `path` to <name><suffix> (numbered if that exists) and return the new path."""
    target, number = path.with_name(path.name + suffix), 1
    while target.exists():
        target, number = path.with_name(f"{path.name}{suffix}.{number}"), number + 1
    path.replace(target)
    return target


def earlier_outputs(folder: Path) -> list[Path]:
    return sorted({p for pattern in RUN_OUTPUTS for p in folder.glob(pattern)})


def clear_for_a_new_run(folder: Path) -> Path | None:
    """Move the files an earlier attempt left in `folder` into `folder/previous-<time>/`, so that a run trained
    from scratch is not mixed with them (curves, checkpoints, result). Returns that folder, or None if there was
    nothing to move."""
    found = earlier_outputs(folder) if folder.is_dir() else []
    if not found:
        return None
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    previous = folder / f"{PREVIOUS}{stamp}"
    previous.mkdir()
    for path in found:
        with contextlib.suppress(FileNotFoundError):  # another DDP rank deleted its own failure record meanwhile
            path.replace(previous / path.name)
    log.info("%s held files of an earlier attempt: moved into %s/", folder, previous.name)
    return previous


def check_writable(folder: Path, key: str, value: str | Path | None = None) -> None:
    """UserError unless `folder` is a folder that can be written, or can be created: a file is created and deleted
    in it (or in its nearest existing ancestor, which is what creating it writes), so that permissions, read-only
    file systems and places like /proc all answer as they will when the run writes. The error names `key`=`value`
    (default: the folder; a file's path where `folder` is the folder it goes into)."""
    setting = f"{key}={folder if value is None else value}"
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{setting} cannot be created: {existing} is a file, not a folder; choose another {key}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test."):
            pass
    except OSError as err:
        raise UserError(
            f"{setting} cannot be written: {existing} refuses a new file ({err.strerror}); choose a writable {key}"
        ) from None


def first_difference(
    saved: Mapping[str, Any], now: Mapping[str, Any], ignored: Iterable[str] = (), prefix: str = ""
) -> tuple[str, Any, Any] | None:
    """The first key (dotted) whose value differs between two nested mappings, with both values (None where a key
    is absent); keys in `ignored` (dotted) are skipped."""
    ignored = set(ignored)
    for key in [*saved, *(k for k in now if k not in saved)]:
        dotted = f"{prefix}{key}"
        if dotted in ignored:
            continue
        a, b = saved.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            if (inner := first_difference(a, b, ignored, f"{dotted}.")) is not None:
                return inner
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            return dotted, a, b
    return None


class CheckOutputFolder(Callback):
    """Hydra callback (conf/train.yaml, conf/q1.yaml): the run's or the sweep's folder must be writable, checked
    before Hydra creates it; otherwise one line and exit code 1."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def refuse_unwritable(folder: Path, key: str) -> None:
    try:
        check_writable(folder, key)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
