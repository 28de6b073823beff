"""The report's CSV files: one row per run (results.csv) and one per run and epoch (curves.csv)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mnist_study.reporting.sweep import EPOCH_TAGS, Run

RESULT_COLUMNS = (
    "run", "model", "regularizer", "variant", "seed", "lr", "epochs", "test_acc", "test_loss", "best_val_acc",
    "best_val_epoch", "seconds", "exploded", "error",
)  # fmt: skip


def write_results_csv(runs: list[Run], path: Path) -> None:
    """One row per run, every seed, failed runs with their error and no metrics."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_COLUMNS)
        for r in runs:
            values = (
                r.name, r.model, r.regularizer, r.variant, r.seed, r.lr, r.epochs, r.test_acc, r.test_loss,
                r.best_val_acc, r.best_val_epoch, r.seconds, r.exploded if r.ok else None, r.error,
            )  # fmt: skip
            writer.writerow(["" if v is None else v for v in values])


def write_curves_csv(runs: list[Run], path: Path) -> None:
    """One row per run and epoch (counted from 1)."""
    columns = ["run", "model", "regularizer", "variant", "seed", "epoch", *EPOCH_TAGS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for run in runs:
            epochs = max((len(v) for v in run.curves.values()), default=0)
            for index in range(epochs):
                row: list[Any] = [run.name, run.model, run.regularizer, run.variant, run.seed, index + 1]
                row += [run.curves[t][index] if index < len(run.curves.get(t, [])) else "" for t in EPOCH_TAGS]
                writer.writerow(row)
