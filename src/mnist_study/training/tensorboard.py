"""TensorBoard's own views of a run, written with its APIs when TensorBoard is among the loggers: the comparison copies
and the custom-scalars layout that draws them, and the HPARAMS table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from mnist_study.training.callbacks import AfterEachEpoch


def comparison_layout(run: str, model: str, regularizer: str) -> dict:
    """This run's part of TensorBoard's custom-scalars layout. TensorBoard merges the layouts of all runs in a
    log directory (the charts of same-titled categories), so the page holds charts for exactly the runs, models
    and regularizers present: per run its training against its validation curves, per model its regularizers,
    per regularizer its models (validation)."""

    def per_run(metric: str) -> dict:
        return {f"{run}: {metric}": ["Multiline", [f"^val_vs_train/{re.escape(run)}/(train|val)_{metric}$"]]}

    def chart(kind: str, name: str, metric: str) -> dict:
        return {f"{name}: val {metric}": ["Multiline", [f"^val_by_{kind}/{re.escape(name)}/{metric}$"]]}

    return {
        "Per run: train against validation": per_run("acc") | per_run("loss"),
        "Per model: accuracy": chart("model", model, "acc"),
        "Per model: loss": chart("model", model, "loss"),
        "Per regularizer: accuracy": chart("regularizer", regularizer, "acc"),
        "Per regularizer: loss": chart("regularizer", regularizer, "loss"),
    }


def run_label(trainer: L.Trainer) -> str:
    """The run as TensorBoard lists it in a sweep: its folder's name (cnn-bn,seed=1)."""
    return Path(trainer.default_root_dir).name


class StudyComparison(AfterEachEpoch):
    """The epoch's metrics again under tags that only one run (one model, one regularizer) has, and the
    custom-scalars layout that draws them: per run train against validation, per model its regularizers, per
    regularizer its models. Their groups (val_by_model/, val_by_regularizer/, val_vs_train/) sort after train/
    and val/, which Time Series shows first."""

    def __init__(self, model: str, regularizer: str) -> None:
        super().__init__()
        self.model, self.regularizer = model, regularizer

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if writer := rank_zero_writer(trainer):
            writer.add_custom_scalars(comparison_layout(run_label(trainer), self.model, self.regularizer))

    def epoch_done(self, trainer: L.Trainer, module: L.LightningModule, epoch: int) -> None:
        if not (writer := rank_zero_writer(trainer)):
            return
        model, regularizer, run = self.model, self.regularizer, run_label(trainer)
        metrics = trainer.callback_metrics  # already synced across ranks
        for metric in ("acc", "loss"):
            if (value := metrics.get(f"val/{metric}")) is not None:
                writer.add_scalar(f"val_by_model/{model}/{metric}", float(value), epoch)
                writer.add_scalar(f"val_by_regularizer/{regularizer}/{metric}", float(value), epoch)
            for stage in ("train", "val"):
                if (value := metrics.get(f"{stage}/{metric}")) is not None:
                    writer.add_scalar(f"val_vs_train/{run}/{stage}_{metric}", float(value), epoch)


def rank_zero_writer(trainer: L.Trainer) -> SummaryWriter | None:
    """The writer of the run's TensorBoardLogger, on the rank that writes the logs; None when TensorBoard is not
    among the run's loggers (its views are then skipped)."""
    if not trainer.is_global_zero:
        return None
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    return logger.experiment if logger is not None else None


# The tested (best-validation) checkpoint's numbers, as TensorBoard tags: their group sorts after train/ and val/.
TESTED = {"test/acc": "val_best/test_acc", "test/loss": "val_best/test_loss"}
BEST_VAL_ACC = "val_best/val_acc"
HPARAMS_METRICS = {
    TESTED["test/acc"]: "test acc",
    TESTED["test/loss"]: "test loss",
    BEST_VAL_ACC: "best val acc",
    "val/acc": "last val acc",
}


class HParams(L.Callback):
    """TensorBoard's HPARAMS tab, declared with its own API: the experiment's columns (these hyper-parameters,
    with display names, and the metrics) and this run's values. Every run declares the same columns, so the
    table and the parallel-coordinates view show every run of a sweep, whatever model it trains. The metrics
    of the tested checkpoint (val_best/*) are written here, at the last epoch, once it has been tested."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = dict(values)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not (writer := rank_zero_writer(trainer)):
            return
        columns = [hp.HParam(name, display_name=name.replace("_", " ")) for name in self.values]
        metrics = [hp.Metric(tag, display_name=name) for tag, name in HPARAMS_METRICS.items()]
        writer.file_writer.add_summary(hp.hparams_config_pb(hparams=columns, metrics=metrics))
        values = {k: _hparam_value(v) for k, v in self.values.items()}
        writer.file_writer.add_summary(hp.hparams_pb(values, trial_id=run_label(trainer)))

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not (writer := rank_zero_writer(trainer)):
            return
        last_epoch = max(trainer.current_epoch - 1, 0)  # after fit, current_epoch is the number of epochs run
        for metric, tag in TESTED.items():
            if (value := trainer.callback_metrics.get(metric)) is not None:
                writer.add_scalar(tag, float(value), last_epoch)
        best = trainer.checkpoint_callback
        if best is not None and best.best_model_score is not None:  # not known after ddp_spawn
            writer.add_scalar(BEST_VAL_ACC, float(best.best_model_score), last_epoch)
        writer.flush()


def _hparam_value(value: Any) -> bool | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)
