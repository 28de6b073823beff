"""Going on from a checkpoint: what a run can be resumed from, refused in one line before training when it cannot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mnist_study.config import as_dict
from mnist_study.errors import UserError
from mnist_study.training.checkpoint_io import UnreadableCheckpoint, check_loadable, checkpoint_problem

log = logging.getLogger(__name__)


def check_resumable(ckpt_path: str | Path, cfg: DictConfig, name: str | None = None) -> None:
    """Refuse, in one line and before training, a checkpoint this run cannot go on from: unreadable, not of
    train.py, trained with other options, or following a schedule planned for another number of epochs.
    `name` says how the file was given (default: ckpt_path=<path>)."""
    given = name is None
    name = name or f"ckpt_path={ckpt_path}"
    anew = "leave out ckpt_path to train anew" if given else f"delete {ckpt_path} to train anew"
    try:
        check_loadable(ckpt_path)
    except UnreadableCheckpoint as err:
        raise UnreadableCheckpoint(f"ckpt_path={err}" if given else str(err)) from None
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    saved = train_py_options(checkpoint, name, "checkpoints/last.ckpt")
    for group in RESUMED_GROUPS:
        if isinstance(saved.get(group), dict) and (difference := option_difference(group, saved[group], cfg)):
            trained, asked = difference
            raise UserError(
                f"{name} was trained with {trained}, this run has {asked}: pass {trained} to resume it, or {anew}"
            )
    check_schedule_length(name, checkpoint, saved.get("scheduler") or {}, cfg.trainer.max_epochs)


RESUMED_GROUPS = ("model", "regularizer", "optimizer", "scheduler")  # a resumed run must keep all of these


def train_py_options(checkpoint: dict[str, Any], name: str, wanted: str) -> dict[str, Any]:
    """The options a train.py checkpoint was trained with (its hyper-parameters: model, regularizer, optimizer,
    scheduler); UserError for a Lightning checkpoint of anything else, advising to pass `wanted` of a run."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(group), dict) for group in RESUMED_GROUPS[:3]):
        raise UserError(
            f"{name} is a Lightning checkpoint but not one of train.py (its hyper-parameters name no model, "
            f"regularizer and optimizer): pass the {wanted} of a train.py run"
        )
    return saved


def option_difference(group: str, saved: dict[str, Any], cfg: DictConfig) -> tuple[str, str] | None:
    """The first option of `group` where the checkpoint and this run differ, as (checkpoint's, run's) overrides."""
    now = as_dict(cfg, group)
    if saved.get("name") != now.get("name"):
        return f"{group}={saved.get('name')}", f"{group}={now.get('name')}"
    for key in [*saved, *(k for k in now if k not in saved)]:
        if saved.get(key) != now.get(key):
            return f"{group}.{key}={override_text(saved.get(key))}", f"{group}.{key}={override_text(now.get(key))}"
    return None


def override_text(value: Any) -> str:
    """`value` as a command-line override writes it."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, bool)) or value is None else str(value)


def check_schedule_length(name: str, checkpoint: dict[str, Any], scheduler: dict[str, Any], max_epochs: int) -> None:
    """One-cycle and cosine schedules fix their length in steps when they start (OneCycleLR's total_steps,
    CosineAnnealingLR's T_max): a resumed run must keep trainer.max_epochs. A constant rate can go on longer."""
    length_key = {"onecycle": "total_steps", "cosine": "T_max"}.get(scheduler.get("name", "none"))
    states = checkpoint.get("lr_schedulers") or []
    if length_key is None or not states or not states[0].get(length_key):
        return
    total, epochs_done, steps_done = states[0][length_key], checkpoint["epoch"] + 1, checkpoint["global_step"]
    # last.ckpt is saved at an epoch's end, after epochs_done epochs of steps_done / epochs_done steps each.
    planned, remainder = divmod(total * epochs_done, steps_done) if steps_done > 0 else (0, 1)
    if remainder or planned == max_epochs:
        return  # saved mid-epoch (steps per epoch unknown), or the same plan
    raise UserError(
        f"{name} follows a {scheduler['name']} schedule planned for trainer.max_epochs={planned} ({total} steps), "
        f"this run has trainer.max_epochs={max_epochs}: pass trainer.max_epochs={planned} to resume it "
        "(one-cycle and cosine schedules cannot be stretched; a run with scheduler=none can)"
    )


def run_dir_of(checkpoint: Path) -> Path | None:
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def resume_point(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ckpt_path, or the last.ckpt an interrupted sweep job left behind. A
    last.ckpt that does not load is moved aside (last.ckpt.unreadable) and the job trains from scratch."""
    if cfg.ckpt_path is not None:
        check_resumable(cfg.ckpt_path, cfg)
        return Path(cfg.ckpt_path)
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    if problem := checkpoint_problem(last):
        # Moved, not left: ModelCheckpoint would save the new run's last.ckpt as last-v1.ckpt beside it.
        last.replace(last.with_name(last.name + ".unreadable"))
        log.warning("%s %s: training from scratch (kept as last.ckpt.unreadable)", last, problem.split(";")[0])
        return None
    check_resumable(last, cfg, name=str(last))
    log.info("resuming the interrupted run in %s from %s", output_dir, last)
    return last
