"""From a composed config to a trained, tested model: the body of `train.py`."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.contrib.logging import logging_redirect_tqdm

from mnist_study.atomic_files import remove_orphaned_temp_files
from mnist_study.callbacks import EXPLODED
from mnist_study.checkpoint_io import AtomicCheckpointIO, UnreadableCheckpoint, check_loadable, checkpoint_problem
from mnist_study.classifier import MNISTClassifier
from mnist_study.cli import FAILURE_FILE, in_multirun
from mnist_study.datamodule import MNISTDataModule
from mnist_study.error_analysis import ErrorAnalysis
from mnist_study.errors import UserError
from mnist_study.precision import cpu_name, resolve_precision
from mnist_study.run_guard import hold_run_folder, start_run
from mnist_study.schema import check_config
from mnist_study.tags import RESULT_FILE

log = logging.getLogger(__name__)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")  # Lightning's advertisement for its cloud logger


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
# The model summary's size estimate assumes fp32 under bf16-mixed: true of the weights, which stay fp32.
warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


def _container(cfg: DictConfig, key: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[key], resolve=True)  # type: ignore[return-value]


def build_datamodule(cfg: DictConfig) -> MNISTDataModule:
    return MNISTDataModule(**_container(cfg, "data"), shuffle_seed=cfg.seed, test_every_epoch=cfg.test_every_epoch)


def build_classifier(cfg: DictConfig) -> MNISTClassifier:
    return MNISTClassifier(
        model=_container(cfg, "model"),
        regularizer=_container(cfg, "regularizer"),
        optimizer=_container(cfg, "optimizer"),
        scheduler=_container(cfg, "scheduler"),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group (conf/callbacks/) in its order: `~callbacks.<name>` drops one, `+callbacks.<name>=` adds."""
    return [instantiate(options) for options in (cfg.get("callbacks") or {}).values() if options is not None]


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    options = _container(cfg, "trainer")
    log.info("precision: %s", resolve_precision(options))
    if options.get("enable_progress_bar") is None:  # a bar on a terminal, none in logs and sweeps
        options["enable_progress_bar"] = sys.stderr.isatty()
    logger = TensorBoardLogger(
        save_dir=str(output_dir), name="", version="", default_hp_metric=False, **_container(cfg, "logger")
    )
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)  # the callbacks' folders follow the run (a resume writes into its own)
    remove_orphaned_temp_files(output_dir / "checkpoints")  # left by a save that was killed before its rename
    # The Trainer turns on torch.use_deterministic_algorithms for the process; this is its companion switch, which
    # torch documents as safe to turn off for programs that read no uninitialized memory (the runs stay bit for bit
    # reproducible: tests/test_conventions.py) and which costs up to a tenth of a CNN step on the CPU.
    torch.utils.deterministic.fill_uninitialized_memory = cfg.fill_uninitialized_memory
    return L.Trainer(
        **options,
        logger=logger,
        callbacks=build_callbacks(cfg),
        plugins=[AtomicCheckpointIO()],  # temp file in the checkpoint's folder, fsync, rename: on every filesystem
        default_root_dir=str(output_dir),
    )


def run_facts(cfg: DictConfig, classifier: MNISTClassifier, trainer: L.Trainer) -> dict[str, Any]:
    """What ran, for result.json and the report: the network, its training settings, the machine."""
    device = trainer.strategy.root_device
    return {
        "model": cfg.model.name,
        "regularizer": cfg.regularizer.name,
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "parameters": classifier.num_parameters,
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr,
        "scheduler": cfg.scheduler.name,
        "batch_size": cfg.data.batch_size,
        "precision": str(trainer.precision),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


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
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(group), dict) for group in RESUMED_GROUPS[:3]):
        raise UserError(
            f"{name} is a Lightning checkpoint but not one of train.py (its hyper-parameters name no model, "
            "regularizer and optimizer): pass the checkpoints/last.ckpt of a train.py run"
        )
    for group in RESUMED_GROUPS:
        if isinstance(saved.get(group), dict) and (difference := option_difference(group, saved[group], cfg)):
            trained, asked = difference
            raise UserError(
                f"{name} was trained with {trained}, this run has {asked}: pass {trained} to resume it, or {anew}"
            )
    check_schedule_length(name, checkpoint, saved.get("scheduler") or {}, cfg.trainer.max_epochs)


RESUMED_GROUPS = ("model", "regularizer", "optimizer", "scheduler")  # a resumed run must keep all of these


def option_difference(group: str, saved: dict[str, Any], cfg: DictConfig) -> tuple[str, str] | None:
    """The first option of `group` where the checkpoint and this run differ, as (checkpoint's, run's) overrides."""
    now = _container(cfg, group)
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


def check_launch(cfg: DictConfig) -> None:
    # Lightning starts the other ranks of strategy=ddp by re-running this command line; inside a -m sweep
    # that would re-run the whole sweep. Under SLURM the ranks are started by srun instead.
    if str(cfg.trainer.get("strategy")) == "ddp" and in_multirun() and "SLURM_NTASKS" not in os.environ:
        raise UserError(
            "trainer.strategy=ddp cannot start its ranks inside a -m sweep: add trainer.strategy=ddp_spawn, "
            "or use hydra/launcher=submitit_slurm, where SLURM starts them"
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


def train(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)  # types were checked as Hydra composed cfg; here ranges, names and keys added with +
    check_launch(cfg)
    output_dir = Path(cfg.output_dir)
    start_run(output_dir)  # FolderInUse while another live process trains here
    if (output_dir / RESULT_FILE).is_file() and cfg.ckpt_path is None:  # a re-run sweep: this job is done
        log.info("%s already holds a finished run; skipping it (delete %s to train again)", output_dir, RESULT_FILE)
        return json.loads((output_dir / RESULT_FILE).read_text())
    checkpoint = resume_point(cfg, output_dir)
    if checkpoint is not None:  # go on writing into the run's own folder: one run, one set of logs
        output_dir = run_dir_of(checkpoint) or output_dir
        hold_run_folder(output_dir)
    (output_dir / FAILURE_FILE).unlink(missing_ok=True)

    L.seed_everything(cfg.seed, workers=False, verbose=False)
    datamodule = build_datamodule(cfg)
    classifier = build_classifier(cfg)
    trainer = build_trainer(cfg, output_dir)
    log.info(
        "device %s, channels_last %s, compile %s, data on the device %s",
        trainer.strategy.root_device,
        cfg.channels_last,
        cfg.compile,
        cfg.data.on_device,
    )
    started = datetime.now(timezone.utc)
    # Log lines printed while a progress bar is drawn go through tqdm, so they do not end up on the bar's line.
    with (
        logging_redirect_tqdm([logging.root, logging.getLogger("lightning.pytorch")])
        if trainer.progress_bar_callback
        else nullcontext()
    ):
        # weights_only: a checkpoint file is data, never code (README: Trust)
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        exploded = trainer.callback_metrics.get(EXPLODED)  # read before test() replaces the metrics
        best = trainer.checkpoint_callback
        tested = best.best_model_path if best is not None else None  # none saved with debug=fast: the last weights
        trainer.test(classifier, datamodule=datamodule, ckpt_path=tested or None, verbose=False, weights_only=True)
    finished = datetime.now(timezone.utc)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if best is not None and best.best_model_score is not None:  # not known after ddp_spawn
        metrics["best_val/acc"] = float(best.best_model_score)
    result = {**metrics, **run_facts(cfg, classifier, trainer), "started": started.isoformat()}
    result |= {"finished": finished.isoformat(), "seconds": (finished - started).total_seconds()}
    if exploded is not None:  # absent without the divergence guard
        result["exploded"] = bool(exploded)
    if errors := next((c for c in trainer.callbacks if isinstance(c, ErrorAnalysis)), None):
        result |= {"per_class_acc": errors.per_class_acc, "confusion_matrix": errors.confusion_matrix}
    if trainer.is_global_zero:
        trainer.logger.finalize("success")
        output_dir.mkdir(parents=True, exist_ok=True)  # debug=fast writes no logs or checkpoints there
        (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=1))
        print(
            f"test/acc={metrics['test/acc']:.4f} test/loss={metrics['test/loss']:.4f} "
            f"parameters={classifier.num_parameters} logs: tensorboard --logdir {output_dir}"
        )
    return result
