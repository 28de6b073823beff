"""report.md after a q1 sweep: what ran and where, the losses and gradient differences per K, the
optimized A of both runs, and the computational graph. It stands alone: its figures lie beside it.

    python -m mnist_study.manual_backprop.report SWEEP_DIR DESTINATION [--prefix q1_]

copies a sweep's report and figures elsewhere (e.g. docs/results), each file name prefixed and the
report's image links rewritten to match.
"""

from __future__ import annotations

import argparse
import platform
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from mnist_study.manual_backprop.descent import History, side_by_side
from mnist_study.manual_backprop.figures import (
    by_k,
    draw_graph,
    job_title,
    plot_losses,
    plot_optimized_a,
    swept_besides_k,
)

REPORT_FILE = "report.md"
LOSS_FIGURE = "loss_vs_epoch.png"
A_FIGURE = "optimized_A.png"
GRAPH_FIGURE = "computational_graph.png"
FIGURES = (LOSS_FIGURE, A_FIGURE, GRAPH_FIGURE)
A_AS_TEXT_UP_TO_K = 4  # larger A's are only in the figure


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(devices: set[str]) -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices and torch.cuda.is_available() else ""
    return f"{cpu_name()} ({torch.get_num_threads()} torch threads){gpu}"


def settings_table(histories: list[History]) -> list[str]:
    """One row per setting: its value, or every value it took in the sweep."""
    rows = ["| setting | value |", "|---|---|"]
    for key in histories[0].settings:
        values = sorted({h.settings.get(key) for h in histories}, key=str)
        shown = ", ".join(str(value) for value in values)
        if key == "device":
            shown += f" (ran on {', '.join(sorted({h.device for h in histories}))})"
        rows.append(f"| {key} | {shown} |")
    return rows


def results_table(histories: list[History]) -> list[str]:
    others = swept_besides_k(histories)
    job_header = "| job " if others else ""
    rows = [
        f"| K {job_header}| loss at epoch 0, manual | autograd | final loss, manual | autograd "
        "| largest gradient difference, abs | relative | final A, B, C difference, abs |",
        "|---" * (8 + bool(others)) + "|",
    ]
    for h in by_k(histories):
        job = f"| {', '.join(f'{key}={h.settings[key]}' for key in others)} " if others else ""
        final_difference = max(
            float(np.max(np.abs(np.array(h.final_manual[name]) - np.array(h.final_autograd[name])))) for name in "ABC"
        )
        rows.append(
            f"| {h.settings['k']} {job}| {h.loss_manual[0]:.6g} | {h.loss_autograd[0]:.6g} "
            f"| {h.loss_manual[-1]:.6g} | {h.loss_autograd[-1]:.6g} | {max(h.max_abs_grad_diff):.2e} "
            f"| {max(h.max_rel_grad_error):.2e} | {final_difference:.2e} |"
        )
    return rows


def write_report(histories: list[History], directory: Path, command: str, failures: Sequence[str] = ()) -> Path:
    """The figures and report.md in `directory`; returns the report's path."""
    histories = by_k(histories)
    plot_losses(histories, directory / LOSS_FIGURE)
    plot_optimized_a(histories, directory / A_FIGURE)
    layout = draw_graph(histories[0].settings, directory / GRAPH_FIGURE, [h.settings["k"] for h in histories])
    devices = {h.device for h in histories}
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    a_as_text = [h for h in histories if h.settings["k"] <= A_AS_TEXT_UP_TO_K]
    lines = [
        "# Backpropagation by hand vs torch.autograd (q1)",
        "",
        f"`{command}`, {when}, on {machine(devices)}; torch {torch.__version__}, NumPy {np.__version__}, "
        f"Python {platform.python_version()}.",
        "",
        "For y = Ax, u = σ(y), v = Bx, z = u ⊙ v (or u + v), w = Cz, L = ‖w‖² (the mean over the columns of X "
        "when n_samples > 1), gradient descent on A, B, C from one seeded start runs twice: with the "
        "gradients computed by hand (`engine`, on `backend`'s arrays) and with torch.autograd's. The two are "
        "compared at every step.",
        "",
        "## What ran",
        "",
        *settings_table(histories),
        "",
        "## Losses and gradient differences",
        "",
        *results_table(histories),
        "",
        "The gradient differences are the largest over all epochs: abs is max |manual − autograd| over the "
        "entries of dL/dA, dL/dB, dL/dC; relative divides it, per gradient, by the largest |autograd| entry.",
        "",
        f"![loss vs epoch, one panel per K]({LOSS_FIGURE})",
        "",
        "## The optimized A: manual | autograd | difference",
        "",
        f"![optimized A of both runs and their difference, per K]({A_FIGURE})",
        "",
    ]
    for h in a_as_text:
        lines += [f"{job_title(h, histories)}:", "", "```", side_by_side(h, names="A"), "```", ""]
    lines += [
        "## The computational graph",
        "",
        f"![the computational graph built by graph.py]({GRAPH_FIGURE})",
        "",
        f"Drawn from the nodes that `graph.build` creates ({', '.join(layout.labels)}), walking each node's "
        "parents; a node's column is its topological depth. `backward` visits the same nodes in reverse "
        "order and adds up the gradient of x, which feeds both branches.",
        "",
    ]
    if failures:
        lines += ["## Failed jobs", "", *(f"- {failure}" for failure in failures), ""]
    path = directory / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def publish(sweep_dir: Path, destination: Path, prefix: str) -> Path:
    """Copy the report and its figures, each name prefixed, the report's image links rewritten to match."""
    destination.mkdir(parents=True, exist_ok=True)
    text = (sweep_dir / REPORT_FILE).read_text()
    for figure in FIGURES:
        shutil.copyfile(sweep_dir / figure, destination / f"{prefix}{figure}")
        text = text.replace(f"]({figure})", f"]({prefix}{figure})")
    path = destination / f"{prefix}{REPORT_FILE}"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--prefix", default="q1_")
    args = parser.parse_args(argv)
    if not (args.sweep_dir / REPORT_FILE).is_file():
        parser.error(f"sweep_dir must hold a q1 {REPORT_FILE}, got {str(args.sweep_dir)!r}")
    print(publish(args.sweep_dir, args.destination, args.prefix))


if __name__ == "__main__":
    main()
