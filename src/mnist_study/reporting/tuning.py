"""Each model's peak learning rate from a tuning sweep (`python train.py -m experiment=tune`): tune.md beside
the sweep, with a table learning rate × seed of best validation accuracy per model, the choice, and a
`tuned_lr:` block for conf/train.yaml.

The choice is the rate with the best mean over seeds of `best_val/acc` (the best-validation checkpoint's
accuracy); means equal to TIE are a tie, which goes to the smaller rate. Nothing about the test set is read:
result.json's test metrics stay out of the choice and of tune.md.

    python -m mnist_study.reporting.tuning SWEEP_DIR [OUT_DIR]
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_study.atomic_files import write_text_atomically
from mnist_study.errors import UserError
from mnist_study.reporting.formatting import listing
from mnist_study.reporting.sweep import BASELINE, GROUP_KEYS, Run, collect, config_value, in_study_order

REPORT_FILE = "tune.md"
# Accuracies are float32 counts over the validation set (steps of 1/5000): means that differ by less than
# this differ by rounding only.
TIE = 1e-6
SAME_NETWORK_KEYS = (*GROUP_KEYS, "optimizer.lr")  # what tells the trials of one network apart


@dataclass
class Choice:
    """One network's trials at each rate, and the rate chosen."""

    model: str
    regularizer: str
    variant: str
    val_accs: dict[float, dict[int, float]]  # rate -> seed -> best validation accuracy
    chosen: float | None
    seeds: list[int]  # every seed tried, finished or not

    def mean(self, lr: float) -> float | None:
        values = list(self.val_accs[lr].values())
        return statistics.fmean(values) if values else None

    @property
    def label(self) -> str:
        text = self.model if self.regularizer == BASELINE else f"{self.model} + {self.regularizer}"
        return f"{text} ({self.variant})" if self.variant else text


def validation_accuracy(run: Run) -> float | None:
    """The best-validation checkpoint's accuracy: the only metric a choice reads (None: no result)."""
    return run.best_val_acc if run.ok else None


def tuned_rates(run: Run) -> dict[str, Any]:
    tuned = config_value(run.config, "tuned_lr") if run.config is not None else None
    return OmegaConf.to_container(tuned) if isinstance(tuned, DictConfig) else {}  # type: ignore[return-value]


def choose(val_accs: dict[float, dict[int, float]]) -> float | None:
    """The rate with the best mean validation accuracy; a tie (within TIE) goes to the smaller rate."""
    chosen, best = None, 0.0
    for lr in sorted(val_accs):
        if not val_accs[lr]:
            continue
        mean = statistics.fmean(val_accs[lr].values())
        if chosen is None or mean > best + TIE:
            chosen, best = lr, mean
    return chosen


def choices(trials: list[Run]) -> list[Choice]:
    """One choice per network (model, regularizer, other varied overrides), in the study's order."""
    order = in_study_order([t.model for t in trials] + [t.regularizer for t in trials])
    networks = sorted(
        {(t.model, t.regularizer, t.variant) for t in trials},
        key=lambda n: (order.index(n[0]), order.index(n[1]), n[2]),
    )
    result = []
    for network in networks:
        members = [t for t in trials if (t.model, t.regularizer, t.variant) == network and t.lr is not None]
        val_accs: dict[float, dict[int, float]] = {lr: {} for lr in sorted({t.lr for t in members})}  # type: ignore[misc]
        for t in members:
            if (accuracy := validation_accuracy(t)) is not None:
                val_accs[t.lr][t.seed] = accuracy  # type: ignore[index]
        seeds = sorted({t.seed for t in members})
        result.append(Choice(*network, val_accs=val_accs, chosen=choose(val_accs), seeds=seeds))
    return result


def plain_number(value: float) -> str:
    """A rate as YAML and people read it: 0.0005, not 5e-04 (which YAML 1.1 reads as a string)."""
    text = f"{Decimal(repr(value)):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def choice_section(choice: Choice) -> list[str]:
    seeds = choice.seeds
    if choice.chosen is None:
        tried = ", ".join(plain_number(lr) for lr in choice.val_accs) or "none recorded"
        return [f"## {choice.label}", "", f"No finished run (rates tried: {tried}): no choice.", ""]
    lines = [
        f"## {choice.label}",
        "",
        "| learning rate | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for lr, by_seed in choice.val_accs.items():
        mean = percent(choice.mean(lr))
        if 0 < len(by_seed) < len(seeds):
            mean += f" ({len(by_seed)} of {len(seeds)} seeds)"
        cells = [plain_number(lr), *(percent(by_seed.get(s)) for s in seeds), mean]
        if lr == choice.chosen:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    seeds_used = len(choice.val_accs[choice.chosen])
    lines += [
        "",
        f"Choice: **{plain_number(choice.chosen)}**, mean best validation accuracy "
        f"{percent(choice.mean(choice.chosen))} % over {seeds_used} seed{'s' * (seeds_used > 1)}.",
    ]
    if unfinished := [plain_number(lr) for lr, by_seed in choice.val_accs.items() if not by_seed]:
        lines.append(f"No result yet at {', '.join(unfinished)}: the choice is among the other rates.")
    rates = sorted(choice.val_accs)
    if len(rates) > 1 and choice.chosen in (rates[0], rates[-1]):
        side = "smallest" if choice.chosen == rates[0] else "largest"
        lines.append(f"It is the {side} rate tried: the best may lie beyond it; widen the grid to know.")
    return [*lines, ""]


def yaml_block(chosen: list[Choice], trials: list[Run]) -> list[str]:
    """`tuned_lr:` for conf/train.yaml: the rate chosen without a regularizer (or with the only regularizer
    tuned) for each model; models this sweep did not tune keep the rate the sweep ran with."""
    previous: dict[str, Any] = {}
    for trial in trials:
        previous |= tuned_rates(trial)
    lines = ["tuned_lr:"]
    models = in_study_order([*previous, *(c.model for c in chosen)])
    for model in models:
        candidates = [c for c in chosen if c.model == model and c.chosen is not None]
        if len(candidates) > 1:
            candidates = [c for c in candidates if c.regularizer == BASELINE and not c.variant]
        if len(candidates) == 1:
            rate = candidates[0].chosen
            note = "" if previous.get(model) in (None, rate) else f"  # was {plain_number(float(previous[model]))}"
            lines.append(f"  {model}: {plain_number(rate)}{note}")  # type: ignore[arg-type]
        elif model in previous:
            reason = "several variants tuned: see above" if candidates else "not tuned in this sweep"
            lines.append(f"  {model}: {plain_number(float(previous[model]))}  # {reason}")
    return lines


def markdown(trials: list[Run], sweep_dir: Path) -> tuple[str, list[str]]:
    """tune.md, and the tuned_lr block on its own."""
    done = [t for t in trials if validation_accuracy(t) is not None]
    results = choices(trials)
    block = yaml_block(results, trials)
    regularizers = in_study_order(t.regularizer for t in trials)
    lines = [
        f"# Learning-rate tuning: {sweep_dir.name}",
        "",
        f"{len(done)} of {len(trials)} runs finished; seeds {listing(sorted({t.seed for t in done}))}; "
        f"epochs {listing(t.epochs for t in trials)}; optimizer "
        f"{listing(t.settings.get('optimizer') for t in trials)}, schedule "
        f"{listing(t.settings.get('scheduler') for t in trials)}; regularizer {listing(regularizers)}.",
        "",
        "Each table gives the best validation accuracy (%) of every run: that of its best-validation "
        "checkpoint (result.json `best_val/acc`). The choice is the learning rate with the best mean over "
        "the seeds; a tie goes to the smaller rate. The test set plays no part: no test metric is read.",
        "",
    ]
    if len(done) < len(trials):
        lines += [f"**⚠ partial: {len(trials) - len(done)} of {len(trials)} runs have no result yet; the choices "
                  "may change when they finish.**", ""]  # fmt: skip
    for choice in results:
        lines += choice_section(choice)
    if regularizers == [BASELINE]:
        lines += [
            "The regularized variants (dropout, bn) use their model's rate, tuned here without a regularizer: "
            "optimizer=adam and adamw read `tuned_lr.<model>`. To tune them too: "
            "`python train.py -m experiment=tune regularizer=none,dropout,bn`.",
            "",
        ]
    else:
        lines += [
            f"conf/train.yaml holds one rate per model: the block below takes the one chosen with `{BASELINE}`; "
            "the other regularizers' choices are in their tables (set them with optimizer.lr=...).",
            "",
        ]
    lines += ["For conf/train.yaml:", "", "```yaml", *block, "```", ""]
    if missing := [t for t in trials if validation_accuracy(t) is None]:
        lines += ["## Runs without a result", "", *[f"- `{t.name}`: {t.error or 'no result'}" for t in missing], ""]
    return "\n".join(lines), block


def write_tuning_report(sweep_dir: Path, out_dir: Path | None = None) -> tuple[Path, list[str]]:
    """Write tune.md; returns its path and the tuned_lr block."""
    trials = collect(sweep_dir, grouped_by=SAME_NETWORK_KEYS)
    if not trials:
        raise UserError(f"no runs in {sweep_dir}: give the directory of a `python train.py -m experiment=tune` sweep")
    if not any(validation_accuracy(t) is not None for t in trials):
        raise UserError(f"no run in {sweep_dir} has a result yet: nothing to choose from")
    out_dir = out_dir or sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    text, block = markdown(trials, sweep_dir)
    path = out_dir / REPORT_FILE
    write_text_atomically(path, text)
    return path, block


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0].startswith("-"):
        sys.exit("usage: python -m mnist_study.reporting.tuning SWEEP_DIR [OUT_DIR]   (writes tune.md)")
    try:
        path, block = write_tuning_report(Path(args[0]), Path(args[1]) if len(args) == 2 else None)
    except UserError as err:
        sys.exit(f"error: {err}")
    print("\n".join([f"tuning: {path}", *block]))


if __name__ == "__main__":
    main()
