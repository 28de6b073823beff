"""Going on from a checkpoint: what a run can be resumed from, refused in one line before training when it cannot.

A run is what its checkpoint says: the checkpoint's hyper-parameters record the model, regularizer, optimizer and
schedule, and (`run`) everything else that shapes the trajectory - seeds, the split, the batches an epoch
has, the data, the precision, the world size (run_settings). A resume that would change any of them is refused,
naming the key, the recorded value and the given one, before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_study.config import as_dict
from mnist_study.data.mnist_files import checked_checksums
from mnist_study.errors import UserError
from mnist_study.models.backbones import build_backbone
from mnist_study.runs.folders import first_difference
from mnist_study.runs.names import command_line_override
from mnist_study.training.checkpoint_io import UnreadableCheckpoint, check_loadable, checkpoint_problem
from mnist_study.training.precision import resolve_precision

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
    if problem := structure_problem(checkpoint, cfg):
        raise UserError(f"{name} is not a checkpoint of this project: {problem}; {OWN_CHECKPOINT}")
    if isinstance(recorded := saved.get("run"), dict):
        difference = first_difference(recorded, run_settings(cfg, expected_precision(cfg)))
        if difference is not None:
            key, trained, asked = difference
            raise UserError(
                f"{name} was trained with {key}={override_text(trained)}, this run has {key}={override_text(asked)}: "
                f"pass {key}={override_text(trained)} to resume it, or {anew}"
            )
    check_schedule_length(name, checkpoint, saved.get("scheduler") or {}, cfg.trainer.max_epochs)


RESUMED_GROUPS = ("model", "regularizer", "optimizer", "scheduler")  # a resumed run must keep all of these
# lightning.Trainer arguments that change which batches an epoch trains on, how a step updates the weights, or
# which epoch is the best (validation): a resumed run must keep them too.
TRAJECTORY_TRAINER_KEYS = (
    "devices", "num_nodes", "limit_train_batches", "limit_val_batches", "overfit_batches", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "val_check_interval", "check_val_every_n_epoch",
)  # fmt: skip
OWN_CHECKPOINT = "pass the checkpoints/last.ckpt of a train.py run"
PRECISION_NAMES = {"64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}  # Lightning's short names


def run_settings(cfg: DictConfig, precision: str) -> dict[str, Any]:
    """What shapes a run's trajectory besides its model, regularizer, optimizer and schedule, by config key, as
    plain data (checkpoints load with weights_only=True). `precision`: the resolved one (never auto)."""
    epoch_seed = OmegaConf.select(cfg, "callbacks.epoch_seed.seed", default=None)
    return {
        "seed": cfg.seed,
        "data.split_seed": cfg.data.split_seed,
        "data.val_size": cfg.data.val_size,
        "data.batch_size": cfg.data.batch_size,
        "data.checksums": checked_checksums(as_dict(cfg, "data").get("checksums")),
        "trainer.precision": precision,
        **{f"trainer.{key}": plain(cfg.trainer.get(key)) for key in TRAJECTORY_TRAINER_KEYS},
        "callbacks.epoch_seed.seed": epoch_seed,
    }


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def expected_precision(cfg: DictConfig) -> str:
    """The precision this run will train in, as Lightning names it (trainer.precision=auto resolved for the
    configured network, built on the meta device: nothing allocated)."""
    configured = str(cfg.trainer.precision)
    if configured != "auto":
        return PRECISION_NAMES.get(configured, configured)
    with torch.device("meta"):
        network = build_backbone(as_dict(cfg, "model"), as_dict(cfg, "regularizer"))
    options = as_dict(cfg, "trainer")
    resolve_precision(options, network)
    return str(options["precision"])


def structure_problem(checkpoint: dict[str, Any], cfg: DictConfig) -> str:
    """What makes `checkpoint` unlike one that train.py saved for this config ('' if nothing): its counters, its
    weights' names and shapes, the optimizer's and the schedule's states."""
    for key in ("epoch", "global_step"):
        value = checkpoint.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"its {key} is {value!r}, not a count"
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "its state_dict is not a mapping of names to tensors"
    with torch.device("meta"):
        expected = {
            k: tuple(v.shape)
            for k, v in build_backbone(as_dict(cfg, "model"), as_dict(cfg, "regularizer")).state_dict().items()
        }
    found = {k.removeprefix("net."): tuple(v.shape) for k, v in state.items() if k.startswith("net.")}
    if missing := [k for k in expected if k not in found]:
        return f"its weights lack net.{missing[0]} of model={cfg.model.name} regularizer={cfg.regularizer.name}"
    if extra := [k for k in state if k.removeprefix("net.") not in expected]:
        return f"it holds {extra[0]}, which model={cfg.model.name} regularizer={cfg.regularizer.name} has not"
    for key, shape in expected.items():
        if found[key] != shape:
            return f"its net.{key} has shape {list(found[key])}, this network's has {list(shape)}"
    optimizers = checkpoint.get("optimizer_states")
    if not isinstance(optimizers, list) or len(optimizers) != 1 or not isinstance(optimizers[0], dict):
        return "it has no optimizer state (a weights-only file cannot resume training)"
    schedules = checkpoint.get("lr_schedulers")
    if not isinstance(schedules, list) or len(schedules) != 1 or not isinstance(schedules[0], dict):
        return "it has no learning-rate schedule state"
    if not isinstance(checkpoint.get("loops"), dict):
        return "it has no state of Lightning's training loop"
    return ""


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


LAST = "last.ckpt"  # the run's newest state, saved at every epoch's end (conf/callbacks: last_checkpoint)


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder that holds `checkpoint` in its checkpoints/, or None for a file outside any run folder."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def check_position(ckpt_path: Path) -> None:
    """A run goes on only from its newest state: any other checkpoint of a run folder would fork its curves,
    checkpoints and result. (A checkpoint outside any run folder starts a new run folder: train.py says so.)"""
    if run_dir_of(ckpt_path) is not None and ckpt_path.name != LAST:
        raise UserError(
            f"ckpt_path={ckpt_path} is not the newest checkpoint of its run, which goes on only from its "
            f"{LAST}: pass {command_line_override('ckpt_path', ckpt_path.parent / LAST)} to resume the run, or "
            f"evaluate this checkpoint with python eval.py {command_line_override('ckpt_path', ckpt_path)}"
        )


def resume_point(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ckpt_path, or the last.ckpt an interrupted sweep job left behind. A
    last.ckpt that does not load is moved aside (last.ckpt.unreadable) and the job trains from scratch."""
    if cfg.ckpt_path is not None:
        path = Path(cfg.ckpt_path)
        check_position(path)
        check_resumable(path, cfg)
        if run_dir_of(path) is None:
            log.warning(
                "ckpt_path=%s is outside any run folder (<run>/checkpoints/%s): the training goes on from it in a "
                "new run folder, %s",
                path,
                LAST,
                output_dir,
            )
        return path
    last = output_dir / "checkpoints" / LAST
    if not last.is_file():
        return None
    if problem := checkpoint_problem(last):
        # Moved, not left: ModelCheckpoint would save the new run's last.ckpt as last-v1.ckpt beside it.
        last.replace(last.with_name(last.name + ".unreadable"))
        log.warning(
            "%s %s: training from scratch (the earlier attempt's files, last.ckpt.unreadable among them, are kept in "
            "previous-<time>/)",
            last,
            problem.split(";")[0],
        )
        return None
    check_resumable(last, cfg, name=str(last))
    log.info("resuming the interrupted run in %s from %s", output_dir, last)
    return last


def tested_checkpoint(callback: Any, output_dir: Path) -> str | None:
    """The best checkpoint to test: the run's own, in its checkpoints/ folder; None (test the weights as they
    are) where the run saved none (debug=fast, or a run started from another folder's checkpoint that trained no
    further epoch)."""
    path = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
    if path is None or not path.is_file() or path.resolve().parent != (output_dir / "checkpoints").resolve():
        return None
    return str(path)
