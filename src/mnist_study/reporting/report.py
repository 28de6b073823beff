"""The study's report of a sweep: report.md, with results.csv, curves.csv and the figures beside it.

python report.py SWEEP_DIR [OUT_DIR]
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_study.atomic_files import write_text_atomically
from mnist_study.errors import UserError
from mnist_study.reporting.figures import CLASSES, CONFUSION_FIGURE, figures, mistakes_source
from mnist_study.reporting.formatting import distinct, duration, fmt, listing, mean_std, p_text, points, rate
from mnist_study.reporting.stats import Difference, verdict, welch
from mnist_study.reporting.sweep import (
    BASELINE,
    Run,
    Study,
    collect,
    config_value,
    group,
    in_study_order,
    models_of,
    networks_of,
    regularizers_of,
    varied_keys,
)
from mnist_study.reporting.tables import write_curves_csv, write_results_csv
from mnist_study.runs.artifacts import EPOCH_SECONDS, IMAGES_PER_SECOND
from mnist_study.runs.folders import check_writable

# regularizer.mask, in words (docs/DESIGN.md: why the study's dropout draws its own masks)
DROPOUT_MASKS = {
    "fast": "nn.Dropout's arithmetic with masks drawn by the project's faster CPU generator (regularizer.mask=fast)",
    "torch": "nn.Dropout itself (regularizer.mask=torch)",
}


def differences(runs: list[Run], measure: Callable[[Run], float] | None = None) -> list[tuple[str, str, Difference]]:
    """(model label, regularizer, difference from BASELINE), per network, over the seeds: in test accuracy, in
    points, or in `measure` of each run (runs where it is NaN left out)."""
    measure = measure or (lambda r: 100 * r.test_acc)  # type: ignore[operator]
    rows = []
    for model in models_of(runs):
        control = [v for r in group(runs, model, BASELINE) if not math.isnan(v := measure(r))]
        if not control:
            continue
        for reg in regularizers_of(runs):
            treated = [v for r in group(runs, model, reg) if not math.isnan(v := measure(r))]
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


def epoch_time(run: Run) -> float:
    return run.mean(EPOCH_SECONDS)


def time_phrase(regularizer: str, result: Difference, baseline_seconds: float) -> str:
    """A regularizer's effect on the epoch time, with its interval and test (callers pass testable results)."""
    words = verdict(result, higher="slower", lower="faster")
    p = p_text(result.p_value)
    change = 100 * result.difference / baseline_seconds
    numbers = (
        f"{result.difference:+.2f} s or {change:+.0f} % on {baseline_seconds:.2f} s, 95 % CI {result.low:+.2f} to "
        f"{result.high:+.2f} s, p {p if p[0] == '<' else '= ' + p}"
    )
    if words in ("slower", "faster"):
        return f"`{regularizer}` {words} than `{BASELINE}` ({numbers})"
    return f"`{regularizer}` against `{BASELINE}`: {words} ({numbers})"


def findings(runs: list[Run]) -> list[str]:
    """Sentences derived from the numbers: each regularizer against none per model in test accuracy and in epoch
    time (Welch over the seeds; a time difference only where it can be tested, with 2 seeds or more on each
    side), the models' ranking per regularizer."""
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
    times: dict[str, list[str]] = {}
    for model, reg, result in differences(runs, epoch_time):
        if result.testable:
            baseline = mean_std(epoch_time(r) for r in group(runs, model, BASELINE))[0]
            times.setdefault(model, []).append(time_phrase(reg, result, baseline))
    sentences += [f"**{model}**, epoch time: " + "; ".join(parts) + "." for model, parts in times.items()]
    return sentences


def not_the_full_study(runs: list[Run]) -> list[str]:
    """What this sweep lacks of the study: networks, epochs, seeds (empty: it is the full study)."""
    ok = [r for r in runs if r.ok]
    done = {(r.model, r.regularizer) for r in ok}
    full = Study()
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
        f"- **Device**: {listing(devices)}; **precision**: {listing(r.settings.get('precision') for r in shown)} "
        f"(per network in the results table); {listing(versions, 'torch and lightning versions not recorded')}",
    ]
    if dropout := [r for r in shown if r.regularizer == "dropout"]:
        masks = listing(
            DROPOUT_MASKS.get(r.settings.get("dropout_mask"), r.settings.get("dropout_mask")) for r in dropout
        )
        rates = listing(config_value(r.config, "regularizer.rate") for r in dropout if r.config is not None)
        lines.append(f"- **Dropout**: rate {rates}; {masks}")
    starts, finishes = [r.started for r in shown if r.started], [r.finished for r in shown if r.finished]
    if starts and finishes:
        first, last = min(starts), max(finishes)
        days = listing(sorted({first.date().isoformat(), last.date().isoformat()}))
        when = f"- **Date**: {days.replace(', ', ' to ')} (UTC); **wall time of the sweep**: "
        when += f"{duration((last - first).total_seconds())} ({first:%H:%M} to {last:%H:%M} UTC"
        if run_seconds := [r.seconds for r in shown if r.seconds is not None]:
            when += f"; the runs' own times add up to {duration(sum(run_seconds))}"
        when += ")"
        lines.append(when)
    return lines


def results_table(runs: list[Run]) -> list[str]:
    lines = [
        "| model | regularizer | test acc (%) | test loss | best val acc (%) @ epoch | epoch time (s) | "
        "train images/s | precision | parameters | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
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
            f"{listing(r.settings.get('precision') for r in members)} | {members[0].parameters:,} | {len(members)} |"
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
        "The epoch (counted from 1) at which validation accuracy first reaches its best, mean over seeds, and training "
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
        "Epochs are counted from 1 (epoch 1 is the first pass over the training set), here as in TensorBoard, the "
        "log and the checkpoint names; the best validation epoch is a mean over seeds. Epoch time is train + "
        "validation, first epoch excluded, mean ± std over seeds; a difference in it is stated below only with its "
        "confidence interval.",
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


def write_report(sweep_dir: Path, out_dir: Path | None = None, runs: list[Run] | None = None) -> list[Run]:
    """report.md, results.csv, curves.csv and the figures of the sweep (its `runs`, read if not given), each
    written whole or not at all."""
    out_dir = out_dir or sweep_dir
    if not sweep_dir.is_dir():
        what = "is a file, not a directory" if sweep_dir.exists() else "does not exist"
        raise UserError(f"{sweep_dir} {what}: give the directory of a `python train.py -m ...` sweep")
    check_writable(out_dir, "OUT_DIR" if out_dir != sweep_dir else "SWEEP_DIR")
    runs = collect(sweep_dir) if runs is None else runs
    if not runs:
        raise UserError(f"no runs in {sweep_dir}: give the directory of a `python train.py -m ...` sweep")
    if all(r.error and "not a train.py run" in r.error for r in runs):
        raise UserError(
            f"{sweep_dir} holds no train.py runs ({len(runs)} job folder(s), none with a train.py config: a q1.py "
            "sweep, or another program's): give the directory of a `python train.py -m ...` sweep"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    names = figures(runs, out_dir)
    write_results_csv(runs, out_dir / "results.csv")
    write_curves_csv(runs, out_dir / "curves.csv")
    write_text_atomically(out_dir / "report.md", markdown(runs, sweep_dir, names))
    return runs


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
    if not any(r.ok for r in runs):
        sys.exit(f"error: no run of {sweep_dir} has a result: {out_dir / 'report.md'} lists each with its reason")
