"""Where an epoch's time goes: train.py run under Lightning's SimpleProfiler, its actions summed into the parts
a person can act on (the step's computation, the callbacks' hooks, validation, checkpoint writes, logging).

    python -m benchmarks.cost_table [--epochs 3] [override ...]
    python -m benchmarks.cost_table model=mlp model.hidden_sizes=[64,128,64] regularizer=bn   # the template's net

The overrides are train.py's. The table is per training epoch (the profiler's totals over the epochs after the
first, whose one-off costs are left out by subtracting a one-epoch run) and per training step, in ms.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\|\s*(?P<action>.+?)\s*\|\s*(?P<mean>[\d.e+-]+)\s*\|\s*(?P<calls>\d+)\s*\|\s*(?P<total>[\d.e+-]+)")

TOTAL = "run_training_epoch"


def profile(epochs: int, overrides: list[str], workdir: Path) -> dict[str, tuple[int, float]]:
    """SimpleProfiler's actions of one train.py run of `epochs` epochs: calls and total seconds of each."""
    command = [
        sys.executable, "train.py", f"trainer.max_epochs={epochs}", "trainer.profiler=simple",
        f"hydra.run.dir={workdir / f'epochs{epochs}'}", *overrides,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    out = done.stdout + done.stderr  # Lightning logs its profiler report
    actions = {}
    for line in out.splitlines():
        if (row := ROW.match(line)) and row["action"] != "Action":
            actions[row["action"]] = (int(row["calls"]), float(row["total"]))
    if TOTAL not in actions:
        raise SystemExit(f"no SimpleProfiler table in train.py's output:\n{out[-2000:]}")
    return actions


def total(actions: dict[str, tuple[int, float]], pattern: str) -> float:
    return sum(seconds for action, (_, seconds) in actions.items() if re.search(pattern, action))


def parts(actions: dict[str, tuple[int, float]], epoch: float) -> dict[str, float]:
    """Seconds of each part of the training epoch. The module steps its own optimizer (manual optimization), so its
    training_step holds the forward pass, the backward pass, the update (Lightning's optimizer_step action) and the
    callbacks' backward hooks; the profiler does not split the backward pass off. What no action covers is
    Lightning's own loop around the step."""
    step = total(actions, r"Strategy\]\S*\.training_step$")
    update = total(actions, r"^optimizer_step$")
    batch_hooks = r"^\[Callback\].*\.on_(train_batch|before|after)_\w+$"
    saves = total(actions, r"^save_checkpoint$")
    epoch_hooks = r"^\[Callback\].*\.on_(train_epoch_start|train_epoch_end|validation_start|validation_end)$"
    costs = {
        "forward, loss, metrics, backward, zero_grad, schedule (training_step less the rows below)": step
        - update
        - total(actions, r"^\[Callback\].*\.on_(before|after)_backward$"),
        "optimizer update (Adam, clipping when asked)": update
        - total(actions, r"^\[Callback\].*\.on_before_optimizer_step$"),
        "next batch (data)": total(actions, r"train_dataloader_next$|batch_to_device$"),
        "callbacks' batch hooks (every callback, every hook, each step)": total(actions, batch_hooks),
        "validation (loop, forward, metrics)": total(
            actions, r"val_next$|validation_step$|LightningModule\]\S*\.on_validation_epoch_(start|end)$"
        ),
        "checkpoint saves (2 files, fsync, rename)": saves,
        "callbacks' epoch hooks, less the saves (epochs.csv, TensorBoard views, log line)": total(actions, epoch_hooks)
        - saves,
    }
    costs["Lightning's loop around the step (what no action covers)"] = epoch - sum(costs.values())
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="also print the profiler's 25 costliest actions")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = profile(1, args.overrides, Path(tmp))
        many = profile(args.epochs, args.overrides, Path(tmp))
    epochs = args.epochs - 1
    steps = (many["run_training_batch"][0] - one["run_training_batch"][0]) / epochs
    epoch = (many[TOTAL][1] - one[TOTAL][1]) / epochs
    first, all_epochs = parts(one, one[TOTAL][1]), parts(many, many[TOTAL][1])
    per_epoch = {k: (v - first[k]) / epochs for k, v in all_epochs.items()}
    print(f"train.py {' '.join(args.overrides)}: {steps:.0f} steps an epoch, {epoch:.3f} s an epoch "
          f"(the profiler's {TOTAL}, the epochs after the first)\n")  # fmt: skip
    print("| part | s / epoch | ms / step | share of the epoch |\n|---|---|---|---|")
    for part, seconds in per_epoch.items():
        print(f"| {part} | {seconds:.3f} | {1000 * seconds / steps:.3f} | {seconds / epoch:.1%} |")
    if args.raw:
        print("\n| action | calls | s / epoch |\n|---|---|---|")
        deltas = {a: (many[a][0] - one.get(a, (0, 0.0))[0], many[a][1] - one.get(a, (0, 0.0))[1]) for a in many}
        for action, (calls, seconds) in sorted(deltas.items(), key=lambda kv: -kv[1][1])[:25]:
            print(f"| {action} | {calls / epochs:.0f} | {seconds / epochs:.3f} |")


if __name__ == "__main__":
    main()
