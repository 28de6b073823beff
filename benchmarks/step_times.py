"""A network's training step with each speed switch of the project undone, one at a time.

    python -m benchmarks.step_times [--models cnn] [--regularizers none dropout bn] [--precision fp32 bf16]
        [--rounds 15] [--steps 4] [--threads N] [--clock wall|cpu] [--profile]

The step is the study's (the network of conf/model/, a batch of 128 1x28x28 images, cross-entropy, backward, Adam)
under torch's deterministic mode, as train.py runs it, in fp32 and under bf16 autocast (precision=bf16-mixed).
"project" is the shipped configuration; each other variant undoes one of its speed switches (the first three
give the same numbers bit for bit; the fused update differs from the for-loop in the last bits):

- "ReLU before pool" (CNN): the textbook conv -> ReLU -> max-pool order (the project pools first: same function);
- "NCHW weights" (CNN): channels_last=false;
- "NaN fill on": fill_uninitialized_memory=true (torch's default under deterministic mode);
- "Adam for-loop": optimizer.fused=false (torch's default on the CPU: ~6 passes over each parameter).

Every variant has its own copy of the same network. They take turns in a shuffled order, `--steps` steps each,
for `--rounds` rounds (on a shared machine only interleaved, repeated timings compare); the table gives the
median ms per step, the median of each round's ratio to that round's "project" time with its quartiles, and
the fastest round. --profile adds torch.profiler's ops of the project's step (where its time goes).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from mnist_study.models.backbones import build_backbone

BATCH = 128
Step = Callable[[], None]


def interleaved_rounds(
    steps: dict[str, Step], rounds: int, per_round: int, clock: Callable[[], float], seed: int = 0
) -> dict[str, list[float]]:
    """ms per step of each step function in each round; the functions take turns in a shuffled order."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    order, shuffle = list(steps), random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            start = clock()
            for _ in range(per_round):
                steps[name]()
            times[name].append((clock() - start) / per_round * 1e3)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, q2, q3


def training_step(net: nn.Module, bf16: bool, nan_fill: bool = False, fused: bool = True) -> Step:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (BATCH,), generator=generator)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)

    def step() -> None:
        torch.utils.deterministic.fill_uninitialized_memory = nan_fill
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.utils.deterministic.fill_uninitialized_memory = False

    return step


def relu_before_pool(net: nn.Sequential) -> nn.Sequential:
    layers = list(net)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


MODELS = {
    "softmax": {"name": "softmax"},
    "mlp": {"name": "mlp", "hidden_sizes": [512, 256]},
    "cnn": {"name": "cnn", "channels": [32, 64], "kernel_size": 3, "hidden_size": 128},
}


def variants(model: str, regularizer: str, bf16: bool) -> dict[str, Step]:
    def network() -> nn.Sequential:
        torch.manual_seed(0)
        options = {"name": regularizer, "rate": 0.2} if regularizer == "dropout" else {"name": regularizer}
        return build_backbone(MODELS[model], options).train().to(memory_format=torch.channels_last)

    steps = {"project": training_step(network(), bf16)}
    if model == "cnn":  # the switches that only convolutions have
        steps["ReLU before pool"] = training_step(relu_before_pool(network()), bf16)
        steps["NCHW weights"] = training_step(network().to(memory_format=torch.contiguous_format), bf16)
    steps["NaN fill on"] = training_step(network(), bf16, nan_fill=True)
    steps["Adam for-loop"] = training_step(network(), bf16, fused=False)
    return steps


def print_profile(step: Step, title: str, steps: int = 20) -> None:
    """The ops of `steps` steps by self CPU time, per step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    print(f"\n{title}: {total / steps / 1e3:.2f} ms a step under the profiler; ops by self CPU time")
    for event in events[:12]:
        per_step = event.self_cpu_time_total / steps / 1e3
        share = event.self_cpu_time_total / total
        print(f"  {event.key:44s} {per_step:7.2f} ms {share:6.1%} {event.count // steps:4d} calls")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn"], choices=list(MODELS))
    parser.add_argument("--regularizers", nargs="+", default=["none", "dropout", "bn"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: this process's CPU time")
    parser.add_argument("--profile", action="store_true", help="also torch.profiler's top ops of the project's step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)  # as trainer.deterministic=true
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, batch {BATCH}")
    header = f"{'network':15s} {'precision':9s} {'variant':18s} {'ms/step':>8s} {'x project':>9s}"
    print(f"{header} {'(q1-q3)':>13s} {'best':>7s}")
    for model, regularizer, precision in itertools.product(args.models, args.regularizers, args.precision):
        network = f"{model}-{regularizer}"
        steps = variants(model, regularizer, bf16=precision == "bf16")
        for step in steps.values():  # warm-up: oneDNN picks and caches its kernels
            for _ in range(3):
                step()
        times = interleaved_rounds(steps, args.rounds, args.steps, clock)
        base = times["project"]
        for name, values in times.items():
            q1, q2, q3 = quartiles([v / b for v, b in zip(values, base, strict=True)])
            print(
                f"{network:15s} {precision:9s} {name:18s} {statistics.median(values):8.2f} "
                f"{q2:9.3f} ({q1:.3f}-{q3:.3f}) {min(values):7.2f}",
                flush=True,
            )
        if args.profile:
            print_profile(steps["project"], f"{network}, {precision}")


if __name__ == "__main__":
    main()
