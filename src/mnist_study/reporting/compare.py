"""Two sweeps of the same networks, network by network: does what differs between them (precision, code,
machine, an option) change the result?

    python -m mnist_study.reporting.compare SWEEP_A SWEEP_B [OUT.md]

For each network finished in both sweeps: its test accuracy in each (mean ± std over seeds), the difference
B − A in points with Welch's 95 % interval and t-test (a difference is called one only at p < 0.05), and the
ratio of their epoch times. Each sweep is read as the report reads it (result.json and the event files).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from mnist_study.atomic_files import write_text_atomically
from mnist_study.reporting.formatting import fmt, mean_std, p_text, points
from mnist_study.reporting.stats import verdict, welch
from mnist_study.reporting.sweep import Run, collect, group, networks_of
from mnist_study.runs.artifacts import EPOCH_SECONDS


def comparison(a: list[Run], b: list[Run], name_a: str = "A", name_b: str = "B") -> list[str]:
    """The comparison table, as markdown lines."""
    a, b = [r for r in a if r.ok], [r for r in b if r.ok]
    lines = [
        f"| model | regularizer | {name_a}: test acc (%) | {name_b}: test acc (%) | {name_b} − {name_a} (points) "
        f"| 95 % CI | p | verdict | epoch time {name_b} ÷ {name_a} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, regularizer in networks_of(a):
        runs_a, runs_b = group(a, model, regularizer), group(b, model, regularizer)
        if not runs_b:
            continue
        acc_a, acc_b = ([100 * r.test_acc for r in runs] for runs in (runs_a, runs_b))  # type: ignore[operator]
        result = welch(acc_b, acc_a)
        interval = f"{points(result.low)} to {points(result.high)}" if result.testable else "—"
        p = p_text(result.p_value) if result.testable else "—"
        time_a, time_b = (mean_std(r.mean(EPOCH_SECONDS) for r in runs)[0] for runs in (runs_a, runs_b))
        speed = f"{time_b / time_a:.2f}" if time_a > 0 and not math.isnan(time_b) else "—"
        words = verdict(result, higher="differs", lower="differs")
        lines.append(
            f"| {model} | {regularizer} | {fmt(*mean_std(acc_a)[:2])} | {fmt(*mean_std(acc_b)[:2])} | "
            f"{points(result.difference)} | {interval} | {p} | {words} | {speed} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or any(arg.startswith("-") for arg in args):
        sys.exit("usage: python -m mnist_study.reporting.compare SWEEP_A SWEEP_B [OUT.md]")
    sweeps = [Path(arg) for arg in args[:2]]
    for sweep in sweeps:
        if not sweep.is_dir():
            sys.exit(f"error: {sweep} is not a folder: pass two sweep folders (outputs/multirun/<date>_<time>)")
    a, b = (collect(sweep) for sweep in sweeps)
    text = "\n".join(comparison(a, b, sweeps[0].name, sweeps[1].name)) + "\n"
    if len(args) == 3:
        write_text_atomically(Path(args[2]), text)
    print(text, end="")


if __name__ == "__main__":
    main()
