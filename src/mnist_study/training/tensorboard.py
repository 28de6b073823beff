"""TensorBoard's own views of a run, written with its APIs when TensorBoard is among the loggers: the comparison copies
and the custom-scalars layout that draws them, the HPARAMS table, and the mark that keeps one curve per run.

Every chart's x-axis is the epoch, counted from 1 (the `step` that the module logs with its metrics)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from mnist_study.training.callbacks import AfterEachEpoch

# The last part of the tags of a per-run chart's two series: what its legend ("Matches" under the chart) shows.
SERIES = {"train": "train", "val": "validation"}
METRIC_WORDS = {"acc": "accuracy", "loss": "loss"}


def comparison_layout(run: str, model: str, regularizer: str) -> dict:
    """This run's part of TensorBoard's custom-scalars layout. TensorBoard merges the layouts of all runs in a
    log directory (the charts of same-titled categories), so the page holds charts for exactly the runs, models
    and regularizers present: per run its training against its validation curve, per model its regularizers,
    per regularizer its models (validation). `run` (run_id) is unique in the outputs folder, so a run's own
    charts never draw another run's curves, not even those of the same network in a sweep run again."""

    def per_run(metric: str) -> dict:
        # Both series have the run's colour; TensorBoard gives each a marker in the order its data server lists the
        # tags, which varies, so the legend ("Matches" under the chart, and the tooltip) names them by their tags.
        title = f"{run_title(run)}: {METRIC_WORDS[metric]}, train vs validation"
        return {title: ["Multiline", [f"^val_vs_train/{re.escape(run)}/{metric}/(train|validation)$"]]}

    def chart(kind: str, name: str, metric: str) -> dict:
        return {f"{name}: val {metric}": ["Multiline", [f"^val_by_{kind}/{re.escape(name)}/{metric}$"]]}

    return {
        "Per run: train against validation": per_run("acc") | per_run("loss"),
        "Per model: accuracy": chart("model", model, "acc"),
        "Per model: loss": chart("model", model, "loss"),
        "Per regularizer: accuracy": chart("regularizer", regularizer, "acc"),
        "Per regularizer: loss": chart("regularizer", regularizer, "loss"),
    }


def comparison_tag(run: str, stage: str, metric: str) -> str:
    """The per-run copy of `<stage>/<metric>` that comparison_layout's per-run chart draws."""
    return f"val_vs_train/{run}/{metric}/{SERIES[stage]}"


def run_id(trainer: L.Trainer) -> str:
    """The run as one name that no other run in the outputs folder has: its folder and the folder above it
    (2026-12-04_10-00-00/cnn-bn,seed=1 for a sweep's job; runs/2026-12-04_10-00-00-123456_cnn-bn for a single
    run). A sweep run again writes into a new sweep folder, so its jobs get new names."""
    folder = Path(trainer.default_root_dir).absolute()
    return f"{folder.parent.name}/{folder.name}"


def run_title(run: str) -> str:
    """A run_id as titles and the HPARAMS table show it, the run's own folder first (TensorBoard cuts long names
    at the end): cnn-bn,seed=1 (2026-12-04_10-00-00)."""
    parent, _, folder = run.rpartition("/")
    return f"{folder} ({parent})" if parent else folder


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
            writer.add_custom_scalars(comparison_layout(run_id(trainer), self.model, self.regularizer))

    def epoch_done(self, trainer: L.Trainer, module: L.LightningModule, epoch: int) -> None:
        if not (writer := rank_zero_writer(trainer)):
            return
        model, regularizer, run, step = self.model, self.regularizer, run_id(trainer), epoch + 1
        metrics = trainer.callback_metrics  # already synced across ranks
        for metric in ("acc", "loss"):
            if (value := metrics.get(f"val/{metric}")) is not None:
                writer.add_scalar(f"val_by_model/{model}/{metric}", float(value), step)
                writer.add_scalar(f"val_by_regularizer/{regularizer}/{metric}", float(value), step)
            for stage in ("train", "val"):
                if (value := metrics.get(f"{stage}/{metric}")) is not None:
                    writer.add_scalar(comparison_tag(run, stage, metric), float(value), step)


def rank_zero_writer(trainer: L.Trainer) -> SummaryWriter | None:
    """The writer of the run's TensorBoardLogger, on the rank that writes the logs; None when TensorBoard is not
    among the run's loggers (its views are then skipped)."""
    if not trainer.is_global_zero:
        return None
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    return logger.experiment if logger is not None else None


class OneCurvePerRun(L.Callback):
    """Marks where this fit's epochs start in the run's event file: a TensorBoard session start at the first epoch
    it will log. TensorBoard (and its event reader, EventAccumulator) then drops every point at or after that
    epoch that the folder's older event files hold: a resumed run continues its curves instead of drawing the
    epochs it redoes a second time, and a job trained again from scratch in its folder replaces the old curves."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if writer := rank_zero_writer(trainer):  # after the checkpoint is restored: current_epoch is the next one
            start = SessionLog(status=SessionLog.START)
            writer.file_writer.add_event(Event(step=trainer.current_epoch + 1, session_log=start))


class TensorBoardRunLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, less the hparams.yaml it leaves in the run folder (that file would hold
    `{}`, as the module logs no hyper-parameters to it; they are in .hydra/config.yaml and in HPARAMS), and
    writing one event file per fit and test.

    Lightning finalizes its loggers after fit and again after test, and the stock logger closes its writer
    there: test() then opens a second event file. TensorBoard reads a folder's event files in name order, and
    the names end in a per-process counter, so a run finished within one second whose counter passes a power of
    ten (name.9, name.10) has its files read backwards: the fit's step-0 summaries then purge the tested checkpoint's
    val_best/* points as out of order. A successful stage only flushes here; close() ends the file."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if status == "success":
            self.experiment.flush()
        else:  # failed, or finished by SLURM's requeue signal: this process writes no more
            super().finalize(status)

    def close(self) -> None:
        """The run is done: the writer's file is flushed and closed (none is opened if nothing was logged)."""
        super().finalize("success")

    @rank_zero_only
    def save(self) -> None:
        self.experiment.flush()


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
        # The trial id names the table's row. Unique per run: runs sharing one (a sweep run again, if it were the
        # job's folder name alone) would be merged into one row, their metrics averaged.
        writer.file_writer.add_summary(hp.hparams_pb(values, trial_id=run_title(run_id(trainer))))

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not (writer := rank_zero_writer(trainer)):
            return
        last_epoch = max(trainer.current_epoch, 1)  # after fit, current_epoch is the number of epochs run
        for metric, tag in TESTED.items():
            if (value := trainer.callback_metrics.get(metric)) is not None:
                writer.add_scalar(tag, float(value), last_epoch)
        best = trainer.checkpoint_callback
        if best is not None and best.best_model_score is not None:  # not known after ddp_spawn
            writer.add_scalar(BEST_VAL_ACC, float(best.best_model_score), last_epoch)
        writer.flush()


def _hparam_value(value: Any) -> bool | float | str:
    """Numbers stay numbers (lr: a log axis in the parallel-coordinates view); integers such as the seed are
    labels, written as text: TensorBoard prints every number with 5 significant digits (seed 0 as 0.0000)."""
    if isinstance(value, (bool, float, str)):
        return value
    return str(value)
