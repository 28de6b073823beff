"""epochs.csv, a run's per-epoch metrics whatever its loggers: `epoch` and the EPOCH_COLUMNS, one row per
finished epoch. training.epochs_file writes it; the report reads its curves from it."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from mnist_study.runs.artifacts import EPOCH_COLUMNS, EPOCHS_FILE

EpochRow = dict[str, float]  # "epoch" (counted from 1, as in the log) and the metrics logged at that epoch


def epoch_rows_text(rows: Sequence[EpochRow]) -> str:
    """The file's text: the EPOCH_COLUMNS first, then any other metric in the rows; an empty cell where a
    metric was not logged. Floats are written in full (repr), so they read back exactly."""
    others = sorted({key for row in rows for key in row} - {"epoch", *EPOCH_COLUMNS})
    columns = ["epoch", *EPOCH_COLUMNS, *others]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([int(row["epoch"]), *(repr(float(row[c])) if c in row else "" for c in columns[1:])])
    return out.getvalue()


def read_epoch_rows(path: Path) -> list[EpochRow]:
    """The rows of an epochs.csv, in epoch order; [] when there is no such file."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [
            {key: float(value) for key, value in row.items() if value not in ("", None)} for row in csv.DictReader(f)
        ]
    return sorted(rows, key=lambda row: row["epoch"])


def epoch_curves(run_dir: Path) -> dict[str, list[float]]:
    """Each metric's values in epoch order (epochs where it was not logged left out), from the run's epochs.csv."""
    curves: dict[str, list[float]] = {}
    for row in read_epoch_rows(run_dir / EPOCHS_FILE):
        for key, value in row.items():
            if key != "epoch":
                curves.setdefault(key, []).append(value)
    return curves
