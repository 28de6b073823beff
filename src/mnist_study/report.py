"""The study's report for a sweep directory: report.md, results.csv and the comparison figures.

Each run is read back from what it wrote: `result.json` (test metrics, model, regularizer, seed, epochs,
parameters), its TensorBoard event files (the per-epoch curves, with TensorBoard's own reader) and Hydra's
`.hydra/` folder (overrides, and the config of a run that failed), so any sweep, finished or not, can be
reported again, whatever models, regularizers or other options it varied.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_study.cli import FAILURE_FILE
from mnist_study.errors import UserError

logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event reader narrates every file at INFO

RESULT_FILE = "result.json"
STUDY_ORDER = ("softmax", "mlp", "cnn", "none", "dropout", "bn")  # known names first, in the study's order
CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "test_epoch/acc", "test_epoch/loss")
EPOCH_TAGS = (*CURVES, "time/epoch_s", "time/train_images_per_s")
GROUP_KEYS = ("model", "regularizer", "seed")  # the overrides that a report's rows and seeds already show


@dataclass
class Run:
    name: str
    model: str
    regularizer: str
    seed: int
    overrides: dict[str, str] = field(default_factory=dict)
    variant: str = ""  # the other overrides the sweep varied (e.g. optimizer=sgd): runs differing there are not seeds
    parameters: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)
    test_acc: float | None = None
    test_loss: float | None = None
    error: str | None = None  # failed or incomplete: why

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return self.model if not self.variant else f"{self.model} ({self.variant})"

    def mean(self, tag: str) -> float:
        values = self.curves.get(tag, [])
        # The first epoch pays for warm-up (allocations, caches): leave it out of the timing when possible.
        values = values[1:] if len(values) > 1 else values
        return statistics.fmean(values) if values else math.nan


def read_scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def overrides_of(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.load(path) if path.is_file() else []
    return dict(str(o).lstrip("+~").split("=", 1) for o in overrides if "=" in str(o))  # type: ignore[misc]


def read_run(run_dir: Path, sweep_dir: Path) -> Run:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    name = str(run_dir.relative_to(sweep_dir))
    run = Run(name, str(cfg.model.name), str(cfg.regularizer.name), int(cfg.seed), overrides=overrides_of(run_dir))
    if (run_dir / FAILURE_FILE).is_file():
        run.error = "failed: " + (run_dir / FAILURE_FILE).read_text().splitlines()[0]
        return run
    scalars = read_scalars(run_dir)
    run.curves = {tag: scalars[tag] for tag in EPOCH_TAGS if tag in scalars}
    if not (run_dir / RESULT_FILE).is_file():
        epochs = len(run.curves.get("val/acc", []))
        run.error = f"incomplete: {epochs} of {cfg.trainer.max_epochs} epochs logged and no test result"
        return run
    result = json.loads((run_dir / RESULT_FILE).read_text())
    run.model, run.regularizer, run.seed = result["model"], result["regularizer"], int(result["seed"])
    run.parameters, run.test_acc, run.test_loss = result["parameters"], result["test/acc"], result["test/loss"]
    return run


def collect(sweep_dir: Path) -> list[Run]:
    run_dirs = sorted(p.parent.parent for p in sweep_dir.glob("**/.hydra/config.yaml"))
    runs = [read_run(d, sweep_dir) for d in run_dirs]
    keys = {k for r in runs for k in r.overrides if k not in GROUP_KEYS}
    varied = sorted(k for k in keys if len({r.overrides.get(k) for r in runs}) > 1)
    for run in runs:
        run.variant = ",".join(f"{k}={run.overrides[k]}" for k in varied if k in run.overrides)
    return runs


def in_study_order(names: Iterable[str]) -> list[str]:
    unique = set(names)
    return [n for n in STUDY_ORDER if n in unique] + sorted(unique - set(STUDY_ORDER))


def models_of(runs: list[Run]) -> list[str]:
    """Row labels: each model, with its variant where the sweep varied more than model, regularizer and seed."""
    labels = in_study_order(r.model for r in runs)
    return [lab for m in labels for lab in sorted({r.label for r in runs if r.model == m})]


def regularizers_of(runs: list[Run]) -> list[str]:
    return in_study_order(r.regularizer for r in runs)


# --- numbers -----------------------------------------------------------------------------------------


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan), len(values)


def fmt(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std * scale:.{digits}f}"


def group(runs: list[Run], model: str, regularizer: str) -> list[Run]:
    """The finished seeds of one network; `model` is a row label (a model and its variant)."""
    return [r for r in runs if r.ok and r.label == model and r.regularizer == regularizer]


def exceeds_spread(a: list[float], b: list[float]) -> bool | None:
    """Is the difference of the means more than twice its standard error? None with fewer than 2 seeds."""
    if len(a) < 2 or len(b) < 2:
        return None
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return abs(statistics.fmean(a) - statistics.fmean(b)) > 2 * se


def findings(runs: list[Run]) -> list[str]:
    """Sentences derived from the numbers: the best regularizer per model, the models' ranking, BN's cost."""
    sentences = []
    models, regularizers = models_of(runs), regularizers_of(runs)
    for model in models:
        accs = {reg: [r.test_acc for r in group(runs, model, reg)] for reg in regularizers}
        accs = {reg: v for reg, v in accs.items() if v}
        if len(accs) < 2:
            continue
        best = max(accs, key=lambda reg: statistics.fmean(accs[reg]))
        parts = []
        for reg, values in accs.items():
            if reg == best:
                continue
            diff = (statistics.fmean(accs[best]) - statistics.fmean(values)) * 100
            spread = {
                True: "larger than the seed-to-seed spread",
                False: "within the seed-to-seed spread",
                None: "one seed, so no spread to compare with",
            }[exceeds_spread(accs[best], values)]
            parts.append(f"{diff:+.2f} points over {reg} ({spread})")
        sentences.append(f"**{model}**: best regularizer `{best}`, " + "; ".join(parts) + ".")
    for reg in regularizers:
        means = {m: statistics.fmean(r.test_acc for r in group(runs, m, reg)) for m in models if group(runs, m, reg)}
        if len(means) > 1:
            ranking = " > ".join(f"{m} ({100 * a:.2f}%)" for m, a in sorted(means.items(), key=lambda kv: -kv[1]))
            sentences.append(f"With `{reg}`: {ranking}.")
    for model in models:
        times = {reg: mean_std(r.mean("time/epoch_s") for r in group(runs, model, reg))[0] for reg in ("none", "bn")}
        if not math.isnan(times["none"]) and not math.isnan(times["bn"]):
            change = 100 * (times["bn"] / times["none"] - 1)
            sentences.append(
                f"Batch norm changes {model}'s epoch time by {change:+.0f}% "
                f"({times['none']:.2f} s -> {times['bn']:.2f} s)."
            )
    return sentences


def markdown(runs: list[Run], sweep_dir: Path, figures: list[str]) -> str:
    ok = [r for r in runs if r.ok]
    seeds = sorted({r.seed for r in ok})
    lines = [
        f"# MNIST study: {sweep_dir.name}",
        "",
        f"{len(ok)} of {len(runs)} runs complete; seeds {', '.join(map(str, seeds)) or '—'}. Test accuracy and loss "
        "are those of each run's best checkpoint (highest val/acc); mean ± standard deviation over seeds.",
        "",
        "| model | regularizer | test acc (%) | test loss | best val acc (%) @ epoch | epoch time (s) | "
        "train images/s | parameters | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models_of(ok):
        for reg in regularizers_of(ok):
            members = group(runs, model, reg)
            if not members:
                continue
            acc = mean_std(r.test_acc for r in members)  # type: ignore[misc]
            loss = mean_std(r.test_loss for r in members)  # type: ignore[misc]
            best_vals = [max(r.curves["val/acc"]) for r in members if r.curves.get("val/acc")]
            best_epochs = [
                r.curves["val/acc"].index(max(r.curves["val/acc"])) for r in members if r.curves.get("val/acc")
            ]
            val = mean_std(best_vals)
            epoch = f" @ {statistics.median(best_epochs):g}" if best_epochs else ""
            time = mean_std(r.mean("time/epoch_s") for r in members)
            speed = mean_std(r.mean("time/train_images_per_s") for r in members)
            lines.append(
                f"| {model} | {reg} | {fmt(acc[0], acc[1], 100)} | {fmt(loss[0], loss[1], 1, 4)} | "
                f"{fmt(val[0], val[1], 100)}{epoch} | {fmt(time[0], time[1])} | {fmt(speed[0], math.nan, 1, 0)} | "
                f"{members[0].parameters:,} | {len(members)} |"
            )
    lines += ["", "Epochs are counted from 0. Epoch time is train + validation, first epoch excluded."]
    if len(seeds) > 1:
        lines.append("In the figures, lines are means over seeds and shaded bands span the lowest to the highest seed.")
    lines.append("")
    if sentences := findings(runs):
        lines += [
            "## What the numbers say",
            "",
            "A difference counts as larger than the seed-to-seed spread when it exceeds twice its standard error.",
            "",
            *[f"- {s}" for s in sentences],
            "",
        ]
    if failed := [r for r in runs if not r.ok]:
        lines += ["## Runs without a result", "", *[f"- `{r.name}`: {r.error}" for r in failed], ""]
    if figures:
        lines += ["## Figures", "", *[f"![{name}]({name})" for name in figures], ""]
    return "\n".join(lines)


def write_csv(runs: list[Run], path: Path) -> None:
    columns = ["run", "model", "regularizer", "seed", "epoch", *EPOCH_TAGS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for run in runs:
            epochs = max((len(v) for v in run.curves.values()), default=0)
            for epoch in range(epochs):
                row: list[Any] = [run.name, run.model, run.regularizer, run.seed, epoch]
                row += [run.curves[t][epoch] if epoch < len(run.curves.get(t, [])) else "" for t in EPOCH_TAGS]
                writer.writerow(row)


# --- figures -----------------------------------------------------------------------------------------


def _band(ax: Any, members: list[Run], tag: str, color: str, label: str, style: str = "-") -> None:
    curves = [r.curves[tag] for r in members if r.curves.get(tag)]
    if not curves:
        return
    length = min(len(c) for c in curves)
    columns = list(zip(*(c[:length] for c in curves), strict=True))
    mean = [statistics.fmean(col) for col in columns]
    ax.plot(range(length), mean, style, color=color, label=label, lw=1.6)
    if len(curves) > 1:
        ax.fill_between(range(length), [min(c) for c in columns], [max(c) for c in columns], color=color, alpha=0.2)


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
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _zoom_accuracy(ax: Any) -> None:
    # The first epoch's low accuracy would squash the interesting part of the curves.
    values = [y for line in ax.get_lines() for y in line.get_ydata()[1:]]
    if values:
        ax.set_ylim(max(min(values) - 0.005, 0), min(max(values) + 0.003, 1.0))


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
    return names


def write_report(sweep_dir: Path, out_dir: Path | None = None) -> list[Run]:
    out_dir = out_dir or sweep_dir
    runs = collect(sweep_dir)
    if not runs:
        raise UserError(f"no runs in {sweep_dir}: give the directory of a `python train.py -m ...` sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = figures(runs, out_dir)
    write_csv(runs, out_dir / "results.csv")
    (out_dir / "report.md").write_text(markdown(runs, sweep_dir, names))
    return runs


class StudyReport(Callback):
    """Writes the report when a `train.py -m` sweep ends; exits non-zero if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = write_report(sweep_dir)
        print(f"report: {sweep_dir / 'report.md'}\nlogs: tensorboard --logdir {sweep_dir}")
        if failed := [r for r in runs if not r.ok]:
            print(f"error: {len(failed)} of {len(runs)} runs have no result (listed in the report)", file=sys.stderr)
            sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0].startswith("-"):
        sys.exit("usage: python report.py SWEEP_DIR [OUT_DIR]   (writes report.md, results.csv and figures)")
    sweep_dir = Path(args[0])
    try:
        runs = write_report(sweep_dir, Path(args[1]) if len(args) == 2 else None)
    except UserError as err:
        sys.exit(f"error: {err}")
    out_dir = Path(args[1]) if len(args) == 2 else sweep_dir
    print(f"{sum(r.ok for r in runs)} of {len(runs)} runs reported: {out_dir / 'report.md'}")
