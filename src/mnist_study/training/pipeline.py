"""From a composed config to a trained, tested model: the body of `train.py`."""

from __future__ import annotations

import inspect
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
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, open_dict
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from mnist_study.atomic_files import remove_orphaned_temp_files, write_json_atomically
from mnist_study.config import as_dict
from mnist_study.config.checks import check_config
from mnist_study.config.launch import SPAWN_UNDER_SLURM
from mnist_study.data.datamodule import MNISTDataModule
from mnist_study.errors import UserError
from mnist_study.models.classifier import MNISTClassifier
from mnist_study.runs.artifacts import RESULT_FILE, failure_file
from mnist_study.runs.ending import in_multirun, process_rank
from mnist_study.runs.folders import clear_for_a_new_run, finished_result
from mnist_study.runs.locks import held_folders
from mnist_study.training.callbacks import EXPLODED, EpochProgressBar
from mnist_study.training.checkpoint_io import RUN_OUTPUT_ADVICE, AtomicCheckpointIO
from mnist_study.training.epochs_file import EpochsFile
from mnist_study.training.error_analysis import ErrorAnalysis
from mnist_study.training.precision import cpu_name, resolve_precision
from mnist_study.training.preflight import check_job, lightning_refusals
from mnist_study.training.profiler import NoProfiler
from mnist_study.training.resume import resume_point, run_dir_of, run_settings, tested_checkpoint
from mnist_study.training.tensorboard import TensorBoardRunLogger

log = logging.getLogger(__name__)


class DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")  # Lightning's advertisement for its cloud logger


def quiet_lightning() -> None:
    """Lightning's messages that say nothing about this run, and each of its lines printed once."""
    # lightning/__init__.py gives the `lightning` logger a console handler of its own ("INFO: ...") whatever the
    # root logger has; imported after Hydra set up logging (the tools import it lazily), lightning.pytorch then
    # propagates to both, and every line is printed twice. Hydra's handlers on the root logger speak for it.
    umbrella = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in [h for h in umbrella.handlers if type(h) is logging.StreamHandler]:
            umbrella.removeHandler(handler)
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropLightningTips) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # The model summary's size estimate assumes fp32 under bf16-mixed: true of the weights, which stay fp32.
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


def build_datamodule(cfg: DictConfig) -> MNISTDataModule:
    return MNISTDataModule(**as_dict(cfg, "data"), shuffle_seed=cfg.seed, test_every_epoch=cfg.test_every_epoch)


# Trainer options that Lightning refuses when the module steps its own optimizer: MNISTClassifier applies them.
MODULE_STEP_OPTIONS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")


def build_classifier(cfg: DictConfig) -> MNISTClassifier:
    return MNISTClassifier(
        model=as_dict(cfg, "model"),
        regularizer=as_dict(cfg, "regularizer"),
        optimizer=as_dict(cfg, "optimizer"),
        scheduler=as_dict(cfg, "scheduler"),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        **{key: cfg.trainer.get(key) for key in MODULE_STEP_OPTIONS},
    )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group (conf/callbacks/) in its order: `~callbacks.<name>` drops one, `+callbacks.<name>=` adds."""
    return [instantiate(options) for options in (cfg.get("callbacks") or {}).values() if options is not None]


def build_loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    """The logger group (conf/logger/), each logger writing into the run's folder and, where its entry leaves the
    run's name null, naming the run after that folder."""
    loggers = []
    for options in (cfg.get("logger") or {}).values():
        if options is None:  # logger.<name>=null drops one
            continue
        parameters = inspect.signature(get_class(options._target_)).parameters
        placed: dict[str, Any] = {"save_dir": str(output_dir)} if "save_dir" in parameters else {}
        placed |= {key: output_dir.name for key in ("name", "run_name") if key in options and options[key] is None}
        loggers.append(instantiate(options, **placed))
    return loggers


def build_trainer(cfg: DictConfig, output_dir: Path, network: nn.Module | None = None) -> L.Trainer:
    """The run's Trainer; `network` is what trainer.precision=auto sizes up."""
    options = as_dict(cfg, "trainer")
    for key in MODULE_STEP_OPTIONS:
        options.pop(key, None)
    log.info("precision: %s", resolve_precision(options, network))
    if options.get("enable_progress_bar") is None:  # a bar on a terminal, none in logs and sweeps
        options["enable_progress_bar"] = sys.stderr.isatty()
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)  # loggers and callbacks follow the run (a resume writes into its own folder)
    loggers = build_loggers(cfg, output_dir)
    remove_orphaned_temp_files(output_dir / "checkpoints")  # left by a save that was killed before its rename
    # The Trainer turns on torch.use_deterministic_algorithms for the process; this is its companion switch, which
    # torch documents as safe to turn off for programs that read no uninitialized memory (the runs stay bit for bit
    # reproducible: tests/test_conventions.py) and which costs a share of every CNN step on the CPU.
    torch.utils.deterministic.fill_uninitialized_memory = cfg.fill_uninitialized_memory
    callbacks = build_callbacks(cfg)
    if options["enable_progress_bar"] and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(EpochProgressBar())  # Lightning's bar, counting epochs from 1 like the log
    # AtomicCheckpointIO: temp file in the checkpoint's folder, fsync, rename: on every filesystem. Under SLURM,
    # Lightning's auto-requeue would save an HPC checkpoint mid-step inside its SIGUSR1 handler, which nothing
    # resumes from: runs.signals handles SIGUSR1 instead, and a requeued run resumes from last.ckpt.
    plugins: list[Any] = [AtomicCheckpointIO()]
    if started_by_slurm():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    options["profiler"] = options.get("profiler") or NoProfiler()
    return L.Trainer(
        **options,
        logger=loggers or False,  # None would be Lightning's default logger
        # epochs.csv, whatever the loggers (the report reads it); first, so its write precedes the epoch's timing
        callbacks=[EpochsFile(), *callbacks],
        plugins=plugins,
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


def started_by_slurm() -> bool:
    """Whether Lightning takes this process's ranks from SLURM (srun). Its hint to use srun, given wherever srun
    is installed, is Lightning's to give once, when it picks the environment itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SLURMEnvironment.detect()


def check_launch(cfg: DictConfig) -> None:
    # Lightning starts the other ranks of strategy=ddp by re-running this command line; inside a -m sweep
    # that would re-run the whole sweep. Under SLURM the ranks are started by srun instead.
    if str(cfg.trainer.get("strategy")) == "ddp" and in_multirun() and "SLURM_NTASKS" not in os.environ:
        raise UserError(
            "trainer.strategy=ddp cannot start its ranks inside a -m sweep: add trainer.strategy=ddp_spawn, "
            "or use hydra/launcher=slurm, where SLURM starts them"
        )
    if str(cfg.trainer.get("strategy")) == "ddp_spawn" and started_by_slurm():
        raise UserError(SPAWN_UNDER_SLURM)


def train(cfg: DictConfig) -> dict[str, Any]:
    quiet_lightning()
    check_config(cfg)  # types were checked as Hydra composed cfg; here ranges, names and keys added with +
    check_launch(cfg)
    check_job(cfg, in_multirun())  # this machine's cores, GPUs and memory; the data's checksums
    output_dir = Path(cfg.output_dir)
    held_folders().start_run(output_dir)  # FolderInUse while another live process trains here
    if cfg.ckpt_path is None and (finished := finished_result(output_dir)) is not None:  # a re-run sweep: done
        log.info("%s already holds a finished run; skipping it (delete %s to train again)", output_dir, RESULT_FILE)
        return finished
    checkpoint = resume_point(cfg, output_dir)
    if checkpoint is not None:  # go on writing into the run's own folder: one run, one set of logs
        output_dir = run_dir_of(checkpoint) or output_dir
        held_folders().hold(output_dir)
    elif process_rank() == 0:  # once per run, before any rank writes: the Trainer is not built yet
        clear_for_a_new_run(output_dir)  # an earlier attempt's files go to previous-<time>/, not into this run
    (output_dir / failure_file(process_rank())).unlink(missing_ok=True)

    L.seed_everything(cfg.seed, workers=False, verbose=False)
    datamodule = build_datamodule(cfg)
    classifier = build_classifier(cfg)
    with lightning_refusals():  # a Trainer option or callback argument that Lightning refuses: one line
        trainer = build_trainer(cfg, output_dir, classifier.net)
    classifier.hparams["run"] = run_settings(cfg, str(trainer.precision))  # what a resume must keep (resume.py)
    start_loggers(trainer, cfg)
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
        tested = tested_checkpoint(best, output_dir)  # the run's own best; None: the weights as they are
        trainer.test(classifier, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True)
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
        finish_loggers(trainer, metrics)
        output_dir.mkdir(parents=True, exist_ok=True)  # debug=fast writes no logs or checkpoints there
        write_json_atomically(output_dir / RESULT_FILE, result, RUN_OUTPUT_ADVICE)
        print(
            f"test/acc={metrics['test/acc']:.4f} test/loss={metrics['test/loss']:.4f} "
            f"parameters={classifier.num_parameters} logs: {logs_hint(trainer, output_dir)}"
        )
    return result


# The config's keys that are not the run's hyper-parameters or settings (where files go, what to log).
NOT_PARAMETERS = ("logger", "callbacks", "tuned_lr", "output_dir", "ckpt_path")


def start_loggers(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The run's resolved config, as hyper-parameters, to the loggers other than TensorBoard (whose HPARAMS tab
    training.tensorboard.HParams writes with its own columns)."""
    loggers = [logger for logger in trainer.loggers if not isinstance(logger, TensorBoardLogger)]
    if not loggers:
        return
    parameters = {
        key: as_dict(cfg, key) if isinstance(cfg[key], DictConfig) else cfg[key]
        for key in cfg
        if key not in NOT_PARAMETERS
    }
    for logger in loggers:
        logger.log_hyperparams(parameters)


def finish_loggers(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """The tested checkpoint's numbers to the loggers other than TensorBoard (which training.tensorboard.HParams
    gives them), at the last epoch (counted from 1, as every logged epoch); then each logger closes its run."""
    last_epoch = max(trainer.current_epoch, 1)  # after fit, current_epoch is the number of epochs run
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardRunLogger):
            logger.close()
            continue
        if not isinstance(logger, TensorBoardLogger):
            logger.log_metrics(metrics, step=last_epoch)
        logger.finalize("success")


def logs_hint(trainer: L.Trainer, output_dir: Path) -> str:
    if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
        return f"tensorboard --logdir {output_dir}"
    return str(output_dir)
