"""From a composed config to a trained, tested model: the body of `train.py`."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import PassThroughProfiler
from omegaconf import DictConfig, OmegaConf

from mnist_study.backbones import BACKBONES, REGULARIZERS
from mnist_study.classifier import MNISTClassifier, comparison_layout
from mnist_study.cli import FAILURE_FILE, in_multirun
from mnist_study.datamodule import MNISTDataModule

RESULT_FILE = "result.json"  # written when a run has finished and been tested
log = logging.getLogger(__name__)


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


class EpochSeed(L.Callback):
    """Seeds torch from (seed, epoch, rank) at every epoch start: dropout masks then depend on nothing
    that ran before, so a resumed run goes on exactly as an uninterrupted one would."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 100_003 + trainer.current_epoch * 101 + trainer.global_rank)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")  # Lightning's advertisement for its cloud logger


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class NoProfiler(PassThroughProfiler):
    """Lightning's default (no) profiler, minus the generator-based context manager it enters around every
    hook call: ~45 a step at ~2 us each, 5% of a softmax-regression epoch on the CPU."""

    def profile(self, action_name: str) -> AbstractContextManager[None]:
        return nullcontext()


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    options = _container(cfg, "trainer")
    if options.get("profiler") is None:
        options["profiler"] = NoProfiler()
    if options.get("enable_progress_bar") is None:  # a bar on a terminal, none in logs and sweeps
        options["enable_progress_bar"] = sys.stderr.isatty()
    logger = TensorBoardLogger(
        save_dir=str(output_dir), name="", version="", default_hp_metric=False, **_container(cfg, "logger")
    )
    checkpoints = output_dir / "checkpoints"
    # Lightning 2.6's save_last only refreshes last.ckpt on epochs that improve the best one, so the
    # latest state gets a checkpoint of its own; the best one stays first (trainer.checkpoint_callback).
    best = ModelCheckpoint(
        dirpath=checkpoints, filename="best-epoch{epoch:02d}", monitor="val/acc", mode="max",
        auto_insert_metric_name=False,
    )  # fmt: skip
    last = ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1)
    callbacks = [best, last, EpochSeed(cfg.seed)]
    trainer = L.Trainer(**options, logger=logger, callbacks=callbacks, default_root_dir=str(output_dir))
    if trainer.strategy.root_device.type == "cpu":
        # Lightning sets this on import so that looking for a GPU never initializes CUDA (fork safety). With
        # CUDA uninitialized, torch then loads NVML anew inside every Adam step to count GPUs: ~0.28 ms a
        # step on the CPU here, a third of a softmax epoch. A CPU run never initializes CUDA anyway.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    return trainer


def hyperparameters(cfg: DictConfig, classifier: MNISTClassifier) -> dict[str, Any]:
    """The flat view shown in TensorBoard's HPARAMS tab."""
    flat: dict[str, Any] = {"seed": cfg.seed, "parameters": classifier.num_parameters}
    for group in ("model", "regularizer", "optimizer", "scheduler"):
        for key, value in _container(cfg, group).items():
            flat[f"{group}/{key}"] = str(value) if isinstance(value, list) else value
    flat["data/batch_size"] = cfg.data.batch_size
    for key in ("max_epochs", "precision", "accelerator"):
        flat[f"trainer/{key}"] = str(cfg.trainer.get(key))
    return flat


def check_resumable(ckpt_path: str, cfg: DictConfig) -> None:
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist: pass the last.ckpt of the run to resume")
    saved = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    for group in ("model", "regularizer"):
        if saved.get(group) != _container(cfg, group):
            raise ValueError(
                f"ckpt_path={ckpt_path} is a checkpoint of {group}={saved.get(group)}, this run has "
                f"{group}={_container(cfg, group)}: resume with the same {group} options or pick another checkpoint"
            )


def check_launch(cfg: DictConfig) -> None:
    # Lightning starts the other ranks of strategy=ddp by re-running this command line; inside a -m sweep
    # that would re-run the whole sweep. Under SLURM the ranks are started by srun instead.
    if str(cfg.trainer.get("strategy")) == "ddp" and in_multirun() and "SLURM_NTASKS" not in os.environ:
        raise ValueError(
            "trainer.strategy=ddp cannot start its ranks inside a -m sweep: add trainer.strategy=ddp_spawn, "
            "or use hydra/launcher=submitit_slurm, where SLURM starts them"
        )


def run_dir_of(checkpoint: Path) -> Path | None:
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def resume_point(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ckpt_path, or the last.ckpt an interrupted sweep job left behind."""
    if cfg.ckpt_path is not None:
        check_resumable(cfg.ckpt_path, cfg)
        return Path(cfg.ckpt_path)
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        check_resumable(str(last), cfg)
        log.info("resuming the interrupted run in %s from %s", output_dir, last)
        return last
    return None


def train(cfg: DictConfig) -> dict[str, float]:
    check_launch(cfg)
    output_dir = Path(cfg.output_dir)
    if (output_dir / RESULT_FILE).is_file() and cfg.ckpt_path is None:  # a re-run sweep: this job is done
        log.info("%s already holds a finished run; skipping it (delete %s to train again)", output_dir, RESULT_FILE)
        return json.loads((output_dir / RESULT_FILE).read_text())
    checkpoint = resume_point(cfg, output_dir)
    if checkpoint is not None:  # go on writing into the run's own folder: one run, one set of logs
        output_dir = run_dir_of(checkpoint) or output_dir
    (output_dir / FAILURE_FILE).unlink(missing_ok=True)

    L.seed_everything(cfg.seed, workers=False, verbose=False)
    datamodule = build_datamodule(cfg)
    classifier = build_classifier(cfg)
    trainer = build_trainer(cfg, output_dir)
    log.info(
        "device %s, precision %s, channels_last %s, compile %s, data on the device %s",
        trainer.strategy.root_device,
        trainer.precision,
        cfg.channels_last,
        cfg.compile,
        cfg.data.on_device,
    )
    if trainer.is_global_zero:
        trainer.logger.experiment.add_custom_scalars(comparison_layout(tuple(BACKBONES), REGULARIZERS))
    trainer.fit(classifier, datamodule=datamodule, ckpt_path=checkpoint)
    trainer.test(classifier, datamodule=datamodule, ckpt_path="best", verbose=False)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if (best_score := trainer.checkpoint_callback.best_model_score) is not None:  # not known after ddp_spawn
        metrics["best_val/acc"] = float(best_score)
    if trainer.is_global_zero:
        trainer.logger.log_hyperparams(
            hyperparameters(cfg, classifier), {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()}
        )
        trainer.logger.finalize("success")
        (output_dir / RESULT_FILE).write_text(json.dumps(metrics, indent=2))
        print(
            f"test/acc={metrics['test/acc']:.4f} test/loss={metrics['test/loss']:.4f} "
            f"parameters={classifier.num_parameters} logs: tensorboard --logdir {output_dir}"
        )
    return metrics
