"""Checkpoints written whole or not at all (atomic_files), and a check that a checkpoint file can be resumed from.

Usage::

    removed = remove_orphaned_temp_files(output_dir / "checkpoints")  # at start: temp files of a killed save
    check_loadable(ckpt_path)  # before Trainer.fit(ckpt_path=...): one-line UnreadableCheckpoint
    trainer = L.Trainer(plugins=[AtomicCheckpointIO()], ...)

A save serializes the checkpoint in memory and writes it with `atomic_files.write_atomically`: a crash at any
point leaves the previous checkpoint as it was; a full disk is a one-line DiskFull.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from fsspec.core import url_to_fs
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_study.atomic_files import open_for_writing, write_atomically
from mnist_study.errors import UserError, first_line

# Every Lightning checkpoint has these, whatever the module and callbacks.
REQUIRED_KEYS = ("state_dict", "epoch", "global_step")


RUN_OUTPUT_ADVICE = "Free space there, or write the run's output to a bigger disk"


class UnreadableCheckpoint(UserError):
    """A checkpoint file that torch.load cannot read, or that is not a Lightning checkpoint."""


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
        write_atomically(Path(local_path), buffer.getbuffer(), RUN_OUTPUT_ADVICE, self.open_file)


class RunFolderCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose restored ranking belongs to its own run folder, and whose `{epoch}` in `filename`
    counts from 1 (best-epoch07.ckpt holds the model after the line `epoch 7/30`; the checkpoint's own "epoch"
    stays Lightning's). Lightning restores best_model_path as it was saved, even when the checkpoint comes from
    another folder, and then tests that file: here a run folder that was moved keeps its ranking (the saved paths
    rebased onto the folder), and a run that starts from another folder's checkpoint ranks its own epochs only."""

    @functools.cached_property
    def state_key(self) -> str:  # type: ignore[override]
        # Made of settings fixed at construction; ModelCheckpoint builds the string anew for each hook Lightning
        # calls (it names the hook's profiler action), several times a training step.
        return super().state_key

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None, prefix: str | None = None
    ) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath")
        if saved_dir and self.dirpath and saved_dir != self.dirpath:
            moved = rebased(state_dict, str(saved_dir), str(self.dirpath))
            if moved["best_model_path"] and Path(moved["best_model_path"]).is_file():
                state_dict = moved  # the same run in a moved folder
            else:  # another folder's run: nothing of its ranking applies here
                state_dict = {"dirpath": self.dirpath, "best_model_score": None, "best_model_path": ""}
        super().load_state_dict(state_dict)


def rebased(state_dict: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """ModelCheckpoint's state with every path under `old` moved under `new`."""

    def move(path: Any) -> Any:
        return str(Path(new) / Path(path).relative_to(old)) if path and Path(path).is_relative_to(old) else path

    state = dict(state_dict, dirpath=new)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        state[key] = move(state.get(key, ""))
    state["best_k_models"] = {move(path): score for path, score in (state.get("best_k_models") or {}).items()}
    return state


# --- the loader check -----------------------------------------------------------------------------------


RESUME_ADVICE = "resume from an earlier checkpoint of the run, or start without ckpt_path"


def check_loadable(path: str | os.PathLike, advice: str = RESUME_ADVICE) -> None:
    """Raise UnreadableCheckpoint, in one line naming the file and what is wrong, unless `path` is a Lightning
    checkpoint that torch.load(weights_only=True) reads. `advice` ends the message for a file cut short."""
    path = Path(path)
    problem = checkpoint_problem(path, advice)
    if problem:
        raise UnreadableCheckpoint(f"{path} {problem}")


def checkpoint_problem(path: Path, advice: str = RESUME_ADVICE) -> str:
    """What is wrong with `path` as a checkpoint, as the end of a sentence starting with its name; '' if nothing."""
    earlier = f"; {advice}"
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
