"""The study's report for a sweep directory: report.md, results.csv, curves.csv and the figures.

Each run is read back from what it wrote: `result.json` (test metrics and what ran: model, regularizer, seed,
epochs, optimizer and learning rate, device, versions, times, confusion matrix), its TensorBoard event files
(the per-epoch curves, with TensorBoard's own reader) and Hydra's `.hydra/` folder (overrides, and the config
of a run that failed or of an older run whose result.json says less), so any sweep, finished or not, can be
reported again, whatever models, regularizers or other options it varied.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import re
import shutil
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_study.cli import FAILURE_FILE
from mnist_study.errors import UserError
from mnist_study.schema import CONF_DIR
from mnist_study.stats import Difference, verdict, welch
from mnist_study.tags import EPOCH_SECONDS, IMAGES_PER_SECOND, MISTAKES, RESULT_FILE

logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event reader narrates every file at INFO

BASELINE = "none"  # the regularizer the others are compared with
CLASSES = 10
CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "test_epoch/acc", "test_epoch/loss")
EPOCH_TAGS = (*CURVES, EPOCH_SECONDS, IMAGES_PER_SECOND)
OLD_TAGS = {"time/epoch_s": EPOCH_SECONDS, "time/train_images_per_s": IMAGES_PER_SECOND}  # runs before 2026-12
GROUP_KEYS = ("model", "regularizer", "seed")  # the overrides that a report's rows and seeds already show
# What ran, from result.json, or else from the run's resolved config (None: not recorded by older runs).
SETTINGS = {
    "optimizer": "optimizer.name",
    "scheduler": "scheduler.name",
    "batch_size": "data.batch_size",
    "precision": "trainer.precision",
    "device": None,
    "device_name": None,
    "torch": None,
    "lightning": None,
}


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
    run_dir: Path | None = None
    lr: float | None = None
    epochs: int | None = None
    best_val_acc: float | None = None
    seconds: float | None = None
    started: datetime | None = None
    finished: datetime | None = None
    timed_from_files: bool = False  # started/finished guessed from file times (older runs)
    settings: dict[str, Any] = field(default_factory=dict)  # the keys of SETTINGS that are known
    per_class_acc: list[float] | None = None
    confusion_matrix: list[list[int]] | None = None
    exploded: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return self.model if not self.variant else f"{self.model} ({self.variant})"

    @property
    def best_val_epoch(self) -> int | None:
        """The first epoch (from 0) at which validation accuracy reached its best."""
        values = self.curves.get("val/acc")
        return values.index(max(values)) if values else None

    @property
    def last_gap(self) -> float:
        """Training minus validation accuracy at the last epoch (NaN when either was not logged)."""
        train, val = self.curves.get("train/acc"), self.curves.get("val/acc")
        return train[-1] - val[-1] if train and val else math.nan

    def mean(self, tag: str) -> float:
        values = self.curves.get(tag, [])
        # The first epoch pays for warm-up (allocations, caches): leave it out of the timing when possible.
        values = values[1:] if len(values) > 1 else values
        return statistics.fmean(values) if values else math.nan


def read_events(run_dir: Path) -> tuple[dict[str, list[float]], float | None]:
    """The scalars of each tag, in step order, and the wall time of the first event logged (None: none)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {OLD_TAGS.get(tag, tag): events.Scalars(tag) for tag in events.Tags()["scalars"]}
    first = min((e.wall_time for values in scalars.values() for e in values), default=None)
    return {tag: [e.value for e in values] for tag, values in scalars.items()}, first


@dataclass(frozen=True)
class Study:
    """The full study as conf/ defines it: experiment=study's grid and the default trainer's epochs."""

    models: tuple[str, ...]
    regularizers: tuple[str, ...]
    epochs: int

    @staticmethod
    @functools.cache
    def shipped() -> Study:
        grid = OmegaConf.load(CONF_DIR / "experiment" / "study.yaml").hydra.sweeper.params
        epochs = OmegaConf.load(CONF_DIR / "trainer" / "default.yaml").max_epochs
        return Study(tuple(str(grid.model).split(",")), tuple(str(grid.regularizer).split(",")), int(epochs))


@functools.cache
def not_distinguishing() -> tuple[str, ...]:
    """The keys conf/train.yaml leaves out of run folders' names: for runs whose .hydra/hydra.yaml is missing."""
    keys = OmegaConf.load(CONF_DIR / "train.yaml").hydra.job.config.override_dirname.exclude_keys
    return tuple(keys)


def overrides_of(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides, less those that do not tell runs apart (where the data lives, the
    progress bar...): the keys the sweep left out of its run folders' names."""
    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.load(path) if path.is_file() else []
    pairs = dict(str(o).lstrip("+~").split("=", 1) for o in overrides if "=" in str(o))  # type: ignore[misc]
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    hydra_cfg = OmegaConf.load(hydra_file) if hydra_file.is_file() else OmegaConf.create()
    excluded = OmegaConf.select(hydra_cfg, "hydra.job.config.override_dirname.exclude_keys", default=None)
    return {k: v for k, v in pairs.items() if k not in (not_distinguishing() if excluded is None else excluded)}


def config_value(cfg: DictConfig, key: str) -> Any:
    """`key` of a run's saved config, resolved; None if absent or not resolvable outside the run."""
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def learning_rate(result: dict[str, Any], overrides: dict[str, str], cfg: DictConfig) -> float | None:
    """The run's peak learning rate: result.json, else the override, else the resolved config."""
    for value in (result.get("lr"), overrides.get("optimizer.lr"), config_value(cfg, "optimizer.lr")):
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def timestamp(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def file_time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def read_run(run_dir: Path, sweep_dir: Path) -> Run:
    config_file = run_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_file)
    assert isinstance(cfg, DictConfig)
    name = str(run_dir.relative_to(sweep_dir))
    run = Run(name, str(cfg.model.name), str(cfg.regularizer.name), int(cfg.seed), overrides=overrides_of(run_dir))
    run.run_dir = run_dir
    run.lr = learning_rate({}, run.overrides, cfg)
    run.epochs = config_value(cfg, "trainer.max_epochs")
    run.settings = {k: v for k, key in SETTINGS.items() if key and (v := config_value(cfg, key)) is not None}
    if (run_dir / FAILURE_FILE).is_file():
        run.error = "failed: " + (run_dir / FAILURE_FILE).read_text().splitlines()[0]
        return run
    scalars, first_event = read_events(run_dir)
    run.curves = {tag: scalars[tag] for tag in EPOCH_TAGS if tag in scalars}
    result_file = run_dir / RESULT_FILE
    if not result_file.is_file():
        epochs = len(run.curves.get("val/acc", []))
        run.error = f"incomplete: {epochs} of {run.epochs} epochs logged and no test result"
        return run
    result = json.loads(result_file.read_text())
    run.model, run.regularizer, run.seed = result["model"], result["regularizer"], int(result["seed"])
    run.parameters, run.test_acc, run.test_loss = result["parameters"], result["test/acc"], result["test/loss"]
    run.lr = learning_rate(result, run.overrides, cfg)
    run.epochs = int(result.get("epochs", run.epochs))
    val = run.curves.get("val/acc")
    run.best_val_acc = result.get("best_val/acc", max(val) if val else None)
    run.settings |= {key: result[key] for key in SETTINGS if result.get(key) is not None}
    run.seconds = result.get("seconds")
    run.started, run.finished = timestamp(result.get("started")), timestamp(result.get("finished"))
    if run.started is None or run.finished is None:
        # Older runs: Hydra writes .hydra/ as a job starts (again when a sweep is re-run; the first event
        # is the earlier then), result.json when it ends.
        starts = [config_file.stat().st_mtime] + ([first_event] if first_event is not None else [])
        run.started, run.finished = file_time(min(starts)), file_time(result_file.stat().st_mtime)
        run.timed_from_files = True
    run.per_class_acc = result.get("per_class_acc")
    run.confusion_matrix = result.get("confusion_matrix")
    run.exploded = bool(result.get("exploded", False))
    return run


def varied_keys(runs: list[Run]) -> list[str]:
    """The overrides, other than model, regularizer and seed, whose value differs between runs."""
    keys = {k for r in runs for k in r.overrides if k not in GROUP_KEYS}
    return sorted(k for k in keys if len({r.overrides.get(k) for r in runs}) > 1)


def collect(sweep_dir: Path) -> list[Run]:
    run_dirs = sorted(p.parent.parent for p in sweep_dir.glob("**/.hydra/config.yaml"))
    runs = [read_run(d, sweep_dir) for d in run_dirs]
    varied = varied_keys(runs)
    for run in runs:
        run.variant = ",".join(f"{k}={run.overrides[k]}" for k in varied if k in run.overrides)
    return runs


def in_study_order(names: Iterable[str]) -> list[str]:
    """The study's models and regularizers in experiment=study's order, any others after them."""
    study = Study.shipped()
    known, unique = [*study.models, *study.regularizers], set(names)
    return [n for n in known if n in unique] + sorted(unique - set(known))


def models_of(runs: list[Run]) -> list[str]:
    """Row labels: each model, with its variant where the sweep varied more than model, regularizer and seed."""
    labels = in_study_order(r.model for r in runs)
    return [lab for m in labels for lab in sorted({r.label for r in runs if r.model == m})]


def regularizers_of(runs: list[Run]) -> list[str]:
    return in_study_order(r.regularizer for r in runs)


def networks_of(runs: list[Run]) -> list[tuple[str, str]]:
    """(model label, regularizer) of every network with a finished run, in the study's order."""
    return [(m, reg) for m in models_of(runs) for reg in regularizers_of(runs) if group(runs, m, reg)]


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


def distinct(values: Iterable[Any]) -> list[Any]:
    """The values in order of first appearance, each once, None left out."""
    return list(dict.fromkeys(v for v in values if v is not None))


def listing(values: Iterable[Any], missing: str = "not recorded") -> str:
    return ", ".join(str(v) for v in distinct(values)) or missing


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def rate(lr: float | None) -> str:
    return "—" if lr is None else f"{lr:g}"


def points(value: float) -> str:
    return f"{value:+.2f}"


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def differences(runs: list[Run]) -> list[tuple[str, str, Difference]]:
    """(model label, regularizer, difference from BASELINE) in test accuracy, in points, per network."""
    rows = []
    for model in models_of(runs):
        control = [100 * r.test_acc for r in group(runs, model, BASELINE)]  # type: ignore[operator]
        if not control:
            continue
        for reg in regularizers_of(runs):
            treated = [100 * r.test_acc for r in group(runs, model, reg)]  # type: ignore[operator]
            if reg != BASELINE and treated:
                rows.append((model, reg, welch(treated, control)))
    return rows


def difference_phrase(regularizer: str, result: Difference) -> str:
    words = verdict(result)
    numbers = f"{points(result.difference)} points"
    if result.testable:
        p = p_text(result.p_value)
        numbers += f", 95 % CI {points(result.low)} to {points(result.high)}, p {p if p[0] == '<' else '= ' + p}"
    if words in ("helps", "hurts"):
        return f"`{regularizer}` {words} ({numbers} against `{BASELINE}`)"
    return f"`{regularizer}` against `{BASELINE}`: {words} ({numbers})"


def findings(runs: list[Run]) -> list[str]:
    """Sentences derived from the numbers: each regularizer against none per model (Welch over the seeds),
    the models' ranking per regularizer, batch norm's time cost."""
    sentences = []
    by_model: dict[str, list[str]] = {}
    for model, reg, result in differences(runs):
        by_model.setdefault(model, []).append(difference_phrase(reg, result))
    sentences += [f"**{model}**: " + "; ".join(parts) + "." for model, parts in by_model.items()]
    models, regularizers = models_of(runs), regularizers_of(runs)
    for reg in regularizers:
        means = {m: statistics.fmean(r.test_acc for r in group(runs, m, reg)) for m in models if group(runs, m, reg)}
        if len(means) > 1:
            ranking = " > ".join(f"{m} ({100 * a:.2f}%)" for m, a in sorted(means.items(), key=lambda kv: -kv[1]))
            sentences.append(f"With `{reg}`: {ranking}.")
    for model in models:
        times = {reg: mean_std(r.mean(EPOCH_SECONDS) for r in group(runs, model, reg))[0] for reg in (BASELINE, "bn")}
        if not math.isnan(times[BASELINE]) and not math.isnan(times["bn"]):
            change = 100 * (times["bn"] / times[BASELINE] - 1)
            sentences.append(
                f"Batch norm changes {model}'s epoch time by {change:+.0f}% "
                f"({times[BASELINE]:.2f} s -> {times['bn']:.2f} s)."
            )
    return sentences


# --- report.md ---------------------------------------------------------------------------------------


def not_the_full_study(runs: list[Run]) -> list[str]:
    """What this sweep lacks of the study: networks, epochs, seeds (empty: it is the full study)."""
    ok = [r for r in runs if r.ok]
    done = {(r.model, r.regularizer) for r in ok}
    full = Study.shipped()
    study = [(m, reg) for m in full.models for reg in full.regularizers]
    gaps = []
    if missing := [f"{m} + {reg}" for m, reg in study if (m, reg) not in done]:
        gaps.append(f"{len(study) - len(missing)} of {len(study)} networks (missing: {', '.join(missing)})")
    epochs = sorted({r.epochs for r in ok if r.epochs is not None})
    if epochs and epochs[0] < full.epochs:
        span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
        gaps.append(f"{span} epoch{'s' * (span != '1')} instead of {full.epochs}")
    networks = networks_of(ok)
    if single := [f"{m} + {reg}" for m, reg in networks if len(group(ok, m, reg)) == 1]:
        if len(single) == len(networks):
            gaps.append("1 seed, so differences cannot be tested")
        else:
            gaps.append(f"1 seed for {', '.join(single)}")
    return gaps


def device_text(settings: dict[str, Any]) -> str | None:
    if not settings.get("device"):
        return None
    name = settings.get("device_name")
    return f"{settings['device']} ({name})" if name else str(settings["device"])


def what_ran(runs: list[Run]) -> list[str]:
    """The header's list: the settings of the finished runs (of all runs when none finished)."""
    shown = [r for r in runs if r.ok] or runs
    seeds = sorted({r.seed for r in shown})
    lrs = []
    for model in in_study_order(r.model for r in shown):
        rates = sorted({r.lr for r in shown if r.model == model and r.lr is not None})
        lrs.append(f"{model} {', '.join(rate(lr) for lr in rates) or 'not recorded'}")
    epochs = distinct(sorted({r.epochs for r in shown if r.epochs is not None}))
    devices = distinct(device_text(r.settings) for r in shown)
    versions = distinct(
        f"torch {r.settings['torch']}, lightning {r.settings['lightning']}" for r in shown if r.settings.get("torch")
    )
    pairs = {(r.model, r.regularizer) for r in shown}
    networks = [(m, reg) for m in in_study_order(r.model for r in shown) for reg in regularizers_of(shown)]
    networks = [net for net in networks if net in pairs]
    varied = varied_keys(shown)
    also = f"; **also varied**: {', '.join(varied)} (each value its own row)" if varied else ""
    lines = [
        f"- **Networks**: {', '.join(f'{m} + {reg}' for m, reg in networks) or '—'}{also}",
        f"- **Seeds**: {', '.join(map(str, seeds))}; **epochs**: {listing(epochs)}",
        f"- **Optimizer**: {listing(r.settings.get('optimizer') for r in shown)}; peak learning rate: "
        f"{'; '.join(lrs)}; **schedule**: {listing(r.settings.get('scheduler') for r in shown)}; "
        f"**batch size**: {listing(r.settings.get('batch_size') for r in shown)}",
        f"- **Device**: {listing(devices)}; **precision**: {listing(r.settings.get('precision') for r in shown)}; "
        f"{listing(versions, 'torch and lightning versions not recorded')}",
    ]
    starts, finishes = [r.started for r in shown if r.started], [r.finished for r in shown if r.finished]
    if starts and finishes:
        first, last = min(starts), max(finishes)
        days = listing(sorted({first.date().isoformat(), last.date().isoformat()}))
        when = f"- **Date**: {days.replace(', ', ' to ')} (UTC); **wall time of the sweep**: "
        when += f"{duration((last - first).total_seconds())} ({first:%H:%M} to {last:%H:%M} UTC"
        if run_seconds := [r.seconds for r in shown if r.seconds is not None]:
            when += f"; the runs' own times add up to {duration(sum(run_seconds))}"
        when += ")"
        if any(r.timed_from_files for r in shown):
            when += "; from file times for runs whose result.json has no start and end"
        lines.append(when)
    return lines


def results_table(runs: list[Run]) -> list[str]:
    lines = [
        "| model | regularizer | test acc (%) | test loss | best val acc (%) @ epoch | epoch time (s) | "
        "train images/s | parameters | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, reg in networks_of(runs):
        members = group(runs, model, reg)
        acc = mean_std(r.test_acc for r in members)  # type: ignore[misc]
        loss = mean_std(r.test_loss for r in members)  # type: ignore[misc]
        val = mean_std(r.best_val_acc for r in members if r.best_val_acc is not None)
        best_epochs = [r.best_val_epoch for r in members if r.best_val_epoch is not None]
        epoch = f" @ {statistics.fmean(best_epochs):.3g}" if best_epochs else ""
        time = mean_std(r.mean(EPOCH_SECONDS) for r in members)
        speed = mean_std(r.mean(IMAGES_PER_SECOND) for r in members)
        lines.append(
            f"| {model} | {reg} | {fmt(acc[0], acc[1], 100)} | {fmt(loss[0], loss[1], 1, 4)} | "
            f"{fmt(val[0], val[1], 100)}{epoch} | {fmt(time[0], time[1])} | {fmt(speed[0], math.nan, 1, 0)} | "
            f"{members[0].parameters:,} | {len(members)} |"
        )
    return lines


def differences_section(runs: list[Run]) -> list[str]:
    rows = differences(runs)
    if not rows:
        return []
    lines = [
        f"## Regularizers against `{BASELINE}`",
        "",
        f"Each regularizer's difference from the same model without one (`{BASELINE}`) in test accuracy, in "
        "percentage points, with its 95 % confidence interval and the p-value of Welch's t-test over the seeds "
        "(unequal variances, Welch–Satterthwaite degrees of freedom). A regularizer *helps* or *hurts* only "
        "where p < 0.05.",
        "",
        "| model | regularizer | difference (points) | 95 % CI | p | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, reg, result in rows:
        interval = f"{points(result.low)} to {points(result.high)}" if result.testable else "—"
        p = p_text(result.p_value) if result.testable else "—"
        seeds = f"{result.n_treated} vs {result.n_control}"
        lines.append(
            f"| {model} | {reg} | {points(result.difference)} | {interval} | {p} | {seeds} | {verdict(result)} |"
        )
    return [*lines, ""]


def convergence_section(runs: list[Run]) -> list[str]:
    lines = [
        "## Convergence and over-fitting",
        "",
        "The epoch (from 0) at which validation accuracy first reaches its best, mean over seeds, and training "
        "minus validation accuracy at the last epoch in points, mean ± std over seeds: a large gap is "
        "over-fitting. Training accuracy is measured while training (dropout on, weights changing), so it can "
        "fall below validation accuracy.",
        "",
        "| model | regularizer | best val acc first reached at epoch | train − val acc at the last epoch (points) |",
        "|---|---|---|---|",
    ]
    rows = 0
    for model, reg in networks_of(runs):
        members = group(runs, model, reg)
        best_epochs = [r.best_val_epoch for r in members if r.best_val_epoch is not None]
        gap = mean_std(r.last_gap for r in members)
        if best_epochs or gap[2]:
            epoch = f"{statistics.fmean(best_epochs):.3g}" if best_epochs else "—"
            lines.append(f"| {model} | {reg} | {epoch} | {fmt(gap[0], gap[1], 100)} |")
            rows += 1
    return [*lines, ""] if rows else []


def per_class_section(runs: list[Run], figures: list[str]) -> list[str]:
    lines = []
    classes = "".join(f" {digit} |" for digit in range(CLASSES))
    table = [f"| model | regularizer |{classes}", "|---|---|" + "---|" * CLASSES]
    for model, reg in networks_of(runs):
        rows = [r.per_class_acc for r in group(runs, model, reg) if r.per_class_acc]
        if rows:
            means = [statistics.fmean(column) for column in zip(*rows, strict=True)]
            table.append(f"| {model} | {reg} |" + "".join(f" {100 * m:.1f} |" for m in means))
    if len(table) > 2:
        lines += ["Per-class test accuracy (%), mean over seeds:", "", *table, ""]
    if CONFUSION_FIGURE in figures:
        lines += [
            "Confusion matrices of the test set, summed over seeds and normalized per true class (rows); the "
            "colour scale is logarithmic so that the errors show:",
            "",
            f"![{CONFUSION_FIGURE}]({CONFUSION_FIGURE})",
            "",
        ]
    if (mistakes := next((n for n in figures if n.startswith("misclassified_")), None)) and (
        best := mistakes_source(runs)
    ):
        lines += [
            f"The test images that {best.label} + {best.regularizer} (the best mean test accuracy) misclassifies "
            f"most confidently, from its best seed ({best.seed}):",
            "",
            f"![{mistakes}]({mistakes})",
            "",
        ]
    return ["## What the networks get wrong", "", *lines] if lines else []


def markdown(runs: list[Run], sweep_dir: Path, figures: list[str]) -> str:
    ok = [r for r in runs if r.ok]
    lines = [f"# MNIST study: {sweep_dir.name}", "", *what_ran(runs), ""]
    if gaps := not_the_full_study(runs):
        lines += [f"**⚠ not the full study: {'; '.join(gaps)}.**", ""]
    if exploded := [r for r in ok if r.exploded]:
        lines += [
            "## ⚠ Runs whose loss exploded",
            "",
            "Their training loss stayed finite but rose above 100 times chance level: their numbers are in the "
            "tables below but are not trustworthy (lower the learning rate).",
            "",
            *[f"- `{r.name}`" for r in exploded],
            "",
        ]
    lines += [
        "## Results",
        "",
        f"{len(ok)} of {len(runs)} runs complete. Test accuracy and loss are those of each run's best checkpoint "
        "(highest val/acc); mean ± standard deviation over seeds. Every run's numbers and settings are in "
        "results.csv, its per-epoch curves in curves.csv (accuracies there as fractions).",
        "",
        *results_table(runs),
        "",
        "Epochs are counted from 0; the best validation epoch is a mean over seeds. Epoch time is train + "
        "validation, first epoch excluded.",
    ]
    if len({r.seed for r in ok}) > 1:
        lines.append("In the figures, lines are means over seeds and shaded bands span the lowest to the highest seed.")
    lines.append("")
    lines += differences_section(ok)
    if sentences := findings(ok):
        lines += ["## What the numbers say", "", *[f"- {s}" for s in sentences], ""]
    lines += convergence_section(ok)
    lines += per_class_section(ok, figures)
    if failed := [r for r in runs if not r.ok]:
        lines += ["## Runs without a result", "", *[f"- `{r.name}`: {r.error}" for r in failed], ""]
    if curves := [name for name in figures if name != CONFUSION_FIGURE and not name.startswith("misclassified_")]:
        lines += ["## Figures", "", *[f"![{name}]({name})" for name in curves], ""]
    return "\n".join(lines)


# --- CSV ---------------------------------------------------------------------------------------------

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
    """One row per run and epoch."""
    columns = ["run", "model", "regularizer", "variant", "seed", "epoch", *EPOCH_TAGS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for run in runs:
            epochs = max((len(v) for v in run.curves.values()), default=0)
            for epoch in range(epochs):
                row: list[Any] = [run.name, run.model, run.regularizer, run.variant, run.seed, epoch]
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


CONFUSION_FIGURE = "confusion_matrices.png"


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


def best_network(runs: list[Run]) -> tuple[str, str] | None:
    networks = networks_of(runs)
    if not networks:
        return None
    return max(networks, key=lambda net: statistics.fmean(r.test_acc for r in group(runs, *net)))  # type: ignore[misc]


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


def write_report(sweep_dir: Path, out_dir: Path | None = None) -> list[Run]:
    out_dir = out_dir or sweep_dir
    runs = collect(sweep_dir)
    if not runs:
        raise UserError(f"no runs in {sweep_dir}: give the directory of a `python train.py -m ...` sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = figures(runs, out_dir)
    write_results_csv(runs, out_dir / "results.csv")
    write_curves_csv(runs, out_dir / "curves.csv")
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
        sys.exit(
            "usage: python report.py SWEEP_DIR [OUT_DIR]   (writes report.md, results.csv, curves.csv and figures)"
        )
    sweep_dir = Path(args[0])
    try:
        runs = write_report(sweep_dir, Path(args[1]) if len(args) == 2 else None)
    except UserError as err:
        sys.exit(f"error: {err}")
    out_dir = Path(args[1]) if len(args) == 2 else sweep_dir
    print(f"{sum(r.ok for r in runs)} of {len(runs)} runs reported: {out_dir / 'report.md'}")
