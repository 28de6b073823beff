"""The run's own per-epoch metrics file, written whatever loggers the run has (runs.epoch_rows)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from mnist_study.atomic_files import write_atomically
from mnist_study.runs.artifacts import EPOCH_COLUMNS, EPOCHS_FILE, LEARNING_RATE
from mnist_study.runs.epoch_rows import EpochRow, epoch_rows_text, read_epoch_rows
from mnist_study.training.callbacks import AfterEachEpoch


class EpochsFile(AfterEachEpoch):
    """epochs.csv in the run folder, rewritten whole (it holds one short row per epoch) once an epoch's metrics
    are all logged, on the logging rank. A resumed run first drops the rows of the epochs it will train again,
    so every epoch has one row. Nothing is added to the training steps."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[EpochRow] = []

    @staticmethod
    def path(trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / EPOCHS_FILE

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        # current_epoch is the checkpoint's by now: the epochs before it (numbers up to it, from 1) keep their rows
        kept = [row for row in read_epoch_rows(self.path(trainer)) if row["epoch"] <= trainer.current_epoch]
        if kept or self.path(trainer).is_file():
            self.save(trainer, kept)

    def epoch_done(self, trainer: L.Trainer, module: L.LightningModule, epoch: int) -> None:
        if trainer.fast_dev_run:  # debug=fast writes no logs
            return
        metrics, number = trainer.callback_metrics, epoch + 1  # counted from 1, as in the log and TensorBoard
        row: EpochRow = {"epoch": number} | {name: float(metrics[name]) for name in EPOCH_COLUMNS if name in metrics}
        if trainer.optimizers:
            row[LEARNING_RATE] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.save(trainer, [*(r for r in self.rows if r["epoch"] < number), row])

    def save(self, trainer: L.Trainer, rows: list[EpochRow]) -> None:
        self.rows = rows
        write_atomically(
            self.path(trainer), epoch_rows_text(rows).encode(), "free some space; the run's checkpoints are saved apart"
        )
