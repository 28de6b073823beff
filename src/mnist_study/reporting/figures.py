"""The report's figures: validation curves per model and per regularizer, train against validation for every
network, the confusion matrices, and the best network's most confident mistakes (matplotlib, Agg)."""

from __future__ import annotations

import re
import shutil
import statistics
from pathlib import Path
from typing import Any

from mnist_study.reporting.sweep import Run, best_network, group, models_of, regularizers_of
from mnist_study.runs.artifacts import MISTAKES

CLASSES = 10
CONFUSION_FIGURE = "confusion_matrices.png"


def _band(ax: Any, members: list[Run], tag: str, color: str, label: str, style: str = "-") -> None:
    curves = [r.curves[tag] for r in members if r.curves.get(tag)]
    if not curves:
        return
    length = min(len(c) for c in curves)
    columns = list(zip(*(c[:length] for c in curves), strict=True))
    mean = [statistics.fmean(col) for col in columns]
    epochs = range(1, length + 1)
    ax.plot(epochs, mean, style, color=color, label=label, lw=1.6, marker="." if length < 10 else None)
    if len(curves) > 1:
        ax.fill_between(epochs, [min(c) for c in columns], [max(c) for c in columns], color=color, alpha=0.2)


def _comparison(runs: list[Run], fixed: str, value: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    varying = regularizers_of(runs) if fixed == "model" else models_of(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, other in enumerate(varying):
        model, reg = (value, other) if fixed == "model" else (other, value)
        members = group(runs, model, reg)
        for ax, tag in zip(axes, ("val/acc", "val/loss"), strict=True):
            _band(ax, members, tag, f"C{i}", other)
    axes[0].set(xlabel="epoch", ylabel="validation accuracy", title=f"{fixed}={value}: validation accuracy")
    axes[1].set(xlabel="epoch", ylabel="validation loss", title=f"{fixed}={value}: validation loss", yscale="log")
    _zoom_accuracy(axes[0])
    for ax in axes:
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _zoom_accuracy(ax: Any) -> None:
    """Accuracy from just below its lowest point to just above its highest: every epoch shown, the first
    included, and the seeds' bands too."""
    if ax.has_data():
        low, high = ax.dataLim.y0, ax.dataLim.y1
        span = high - low
        ax.set_ylim(max(low - 0.05 * span - 0.001, 0), min(high + 0.05 * span + 0.001, 1.0))


def _epoch_axis(ax: Any) -> None:
    """Epochs are whole numbers counted from 1: integer ticks only, from the first epoch."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs := [x for line in ax.get_lines() for x in line.get_xdata()]:
        ax.set_xlim(0.5, max(epochs) + 0.5)


def _grid(runs: list[Run], metric: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    models, regularizers = models_of(runs), regularizers_of(runs)
    fig, axes = plt.subplots(
        len(models), len(regularizers), figsize=(4 * len(regularizers), 3 * len(models)), sharex=True, squeeze=False
    )
    for row, model in enumerate(models):
        for col, reg in enumerate(regularizers):
            ax = axes[row][col]
            members = group(runs, model, reg)
            _band(ax, members, f"train/{metric}", "C0", "train")
            _band(ax, members, f"val/{metric}", "C1", "validation")
            ax.set_title(f"{model} + {reg}" if members else f"{model} + {reg}: no result", fontsize=10)
            _epoch_axis(ax)
            ax.grid(alpha=0.3)
            if metric == "loss":
                ax.set_yscale("log")
            else:
                _zoom_accuracy(ax)
    axes[0][0].legend()
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"Train vs validation {'accuracy' if metric == 'acc' else 'loss'}: the gap is over-fitting")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


def summed_confusion(members: list[Run]) -> list[list[float]] | None:
    """The runs' confusion matrices summed, each row divided by its total (None: no run recorded one)."""
    matrices = [r.confusion_matrix for r in members if r.confusion_matrix]
    if not matrices:
        return None
    summed = [[sum(m[row][col] for m in matrices) for col in range(CLASSES)] for row in range(CLASSES)]
    return [[count / max(sum(row), 1) for count in row] for row in summed]


def _confusion_grid(runs: list[Run], path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    models, regularizers = models_of(runs), regularizers_of(runs)
    rates = {(m, reg): summed_confusion(group(runs, m, reg)) for m in models for reg in regularizers}
    if not any(rates.values()):
        return False
    fig, axes = plt.subplots(
        len(models),
        len(regularizers),
        figsize=(3.2 * len(regularizers) + 1, 3.2 * len(models)),
        squeeze=False,
        layout="constrained",
    )
    norm = LogNorm(vmin=1e-4, vmax=1)  # errors are 0.01-1 % of a class: a linear scale would hide them
    colors = plt.get_cmap("viridis").with_extremes(bad="white")  # no test image there at all
    image = None
    for row, model in enumerate(models):
        for col, reg in enumerate(regularizers):
            ax, matrix = axes[row][col], rates[(model, reg)]
            ax.set(xticks=range(CLASSES), yticks=range(CLASSES))
            ax.tick_params(labelsize=7)
            if matrix is None:
                ax.set_title(f"{model} + {reg}: not recorded", fontsize=9)
                continue
            seeds = sum(1 for r in group(runs, model, reg) if r.confusion_matrix)
            error = 100 * (1 - statistics.fmean(matrix[k][k] for k in range(CLASSES)))
            shares = np.ma.masked_equal(np.clip(matrix, 0, 1), 0)
            image = ax.imshow(shares, cmap=colors, norm=norm)
            ax.set_title(f"{model} + {reg}\n{seeds} seed{'s' * (seeds > 1)}, mean class error {error:.2f}%", fontsize=9)
            if row == len(models) - 1:
                ax.set_xlabel("predicted")
            if col == 0:
                ax.set_ylabel("true")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="share of the true class")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def mistakes_source(runs: list[Run]) -> Run | None:
    """The best network's best seed (highest test accuracy), if its folder holds the mistakes figure."""
    if (best := best_network(runs)) is None:
        return None
    run = max(group(runs, *best), key=lambda r: r.test_acc)  # type: ignore[arg-type, return-value]
    return run if run.run_dir is not None and (run.run_dir / f"{MISTAKES}.png").is_file() else None


def figures(runs: list[Run], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    names = []
    ok = [r for r in runs if r.ok]
    for model in models_of(ok):
        names.append(f"model_{file_name(model)}.png")
        _comparison(ok, "model", model, out_dir / names[-1])
    for reg in regularizers_of(ok):
        names.append(f"regularizer_{file_name(reg)}.png")
        _comparison(ok, "regularizer", reg, out_dir / names[-1])
    if ok:
        for metric in ("acc", "loss"):
            names.append(f"grid_{metric}.png")
            _grid(ok, metric, out_dir / names[-1])
    if ok and _confusion_grid(ok, out_dir / CONFUSION_FIGURE):
        names.append(CONFUSION_FIGURE)
    if (source := mistakes_source(ok)) and source.run_dir:
        names.append(f"misclassified_{file_name(source.label)}-{file_name(source.regularizer)}.png")
        if source.run_dir / f"{MISTAKES}.png" != out_dir / names[-1]:
            shutil.copyfile(source.run_dir / f"{MISTAKES}.png", out_dir / names[-1])
    return names
