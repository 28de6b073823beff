"""What dropout costs in one CNN training step on the CPU, and what each way of doing it costs.

    python -m benchmarks.dropout_masks [--rounds 15] [--steps 4] [--precision fp32 bf16] [--threads N]
        [--clock wall|cpu] [--only NAME ...] [--compile] [--profile]

The step is the study's: the CNN of conf/model/cnn.yaml with dropout p=0.2 after each pool and after the hidden
ReLU, channels_last weights, a batch of 128 1x28x28 images, cross-entropy, backward, Adam step; under fp32 and
under bf16 autocast (Lightning's precision=bf16-mixed). Every variant has its own copy of the same network;
the variants take turns in a shuffled order, `--steps` steps each, for `--rounds` rounds, since on a shared
machine only interleaved, repeated timings compare. The table gives the median ms per step, the median of
each round's ratio to that round's no-dropout time with its quartiles, the median ratio to nn.Dropout, and
the fastest round ("best", the closest to an idle machine's time). On a busy 2-core machine, 2-thread wall
times are dominated by the OpenMP threads waiting for each other: use --threads 1 --clock cpu there.
--compile adds torch.compile(F.dropout) (its compile time shows in the first-step column); --profile adds
torch.profiler's per-step time of the dropout layers and the top ops, for nn.Dropout and the adopted module.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, record_function
from torch.profiler import profile as torch_profile

from benchmarks.step_times import interleaved_rounds, quartiles
from mnist_study.models.backbones import Regularizer, cnn
from mnist_study.models.dropout import Dropout, keep_mask, layout_like

P, BATCH, LR = 0.2, 128, 2e-3
SCALE = 1.0 / (1.0 - P)


class _Candidate(nn.Module):
    """A dropout written as a function of the input (training mode only; eval is never timed here)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) if self.training else x


class _MaskedScale(torch.autograd.Function):
    """x * scale, zero where the bool tensor `drop` is True; saves only the bool mask (1 byte an element)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, drop: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.mul(scale).masked_fill_(drop, 0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return grad.mul(ctx.scale).masked_fill_(drop, 0), None, None


def _rand_mul(x: Tensor) -> Tensor:  # plain autograd, bool mask: mul's backward saves it
    return x * (torch.rand_like(x, dtype=torch.float32) >= P) * SCALE


def _rand_where(x: Tensor) -> Tensor:
    return torch.where(torch.rand_like(x, dtype=torch.float32) >= P, x * SCALE, 0.0)


def _rand_function(x: Tensor) -> Tensor:  # custom Function saving the bool mask
    return _MaskedScale.apply(x, torch.rand_like(x, dtype=torch.float32) < P, SCALE)


def _rand_float_mask(x: Tensor) -> Tensor:  # torch.rand's mask with nn.Dropout's (and Dropout's) arithmetic
    keep = torch.rand_like(x, dtype=torch.float32) >= P
    return x * torch.empty_like(x).copy_(keep.view(torch.uint8)).div_(1 - P)


def _bits32_function(x: Tensor) -> Tensor:  # the adopted mask, but applied by the bool-mask Function
    return _MaskedScale.apply(x, keep_mask(x, P) == 0, SCALE)


def _bits16_float_mask(x: Tensor) -> Tensor:  # 16 random bits an element (4 per int64 draw): p on a 2**-16 grid
    mask = torch.empty_like(x)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    bits = layout_like(words.view(torch.int16)[:n], mask)
    return x * mask.copy_(torch.ge(bits, round(P * 2**16) - 2**15).view(torch.uint8)).div_(1 - P)


def variants(compile_: bool) -> dict[str, Callable[[], nn.Module]]:
    out: dict[str, Callable[[], nn.Module]] = {
        "no dropout": nn.Identity,
        "nn.Dropout": lambda: nn.Dropout(P),
        "F.dropout": lambda: _Candidate(lambda x: F.dropout(x, P, True)),
        "rand>=p, x*m*s": lambda: _Candidate(_rand_mul),
        "rand>=p, where": lambda: _Candidate(_rand_where),
        "rand<p, bool Function": lambda: _Candidate(_rand_function),
        "rand>=p, float mask": lambda: _Candidate(_rand_float_mask),
        "bits32, bool Function": lambda: _Candidate(_bits32_function),
        "bits16, float mask": lambda: _Candidate(_bits16_float_mask),
        "Dropout (adopted)": lambda: Dropout(P),
    }
    if compile_:
        compiled = torch.compile(lambda x: F.dropout(x, P, True))
        out["compiled F.dropout"] = lambda: _Candidate(compiled)
    return out


def make_net(make_dropout: Callable[[], nn.Module]) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = cnn(Regularizer("dropout", P))
    for i, module in enumerate(net):
        if isinstance(module, nn.Dropout):
            net[i] = make_dropout()
    net.to(memory_format=torch.channels_last).train()
    return net, torch.optim.Adam(net.parameters(), lr=LR)


def make_step(net: nn.Module, optimizer: torch.optim.Optimizer, bf16: bool) -> Callable[[], None]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (BATCH,), generator=generator)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_variants(
    makers: dict[str, Callable[[], nn.Module]], bf16: bool, rounds: int, steps: int, clock: Callable[[], float]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """ms per step of each variant in each round, and each variant's first (warm-up/compile) step in s."""
    step_fns, first = {}, {}
    for name, make in makers.items():
        step = make_step(*make_net(make), bf16)
        start = time.perf_counter()
        step()
        first[name] = time.perf_counter() - start
        for _ in range(2):
            step()
        step_fns[name] = step
    return interleaved_rounds(step_fns, rounds, steps, clock), first


class _Labeled(nn.Module):
    """Runs `inner` under a profiler label, so that the dropout layers' forward time adds up in one row."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        with record_function("dropout layers (forward)"):
            return self.inner(x)


def profile(makers: dict[str, Callable[[], nn.Module]], bf16: bool, passes: int = 3, steps: int = 10) -> None:
    """Per step: the whole step, the three dropout layers' forward and the backward of their multiplications
    (MulBackward0: nothing else in the step multiplies tensors under autograd), medians of `passes`
    interleaved profiles of `steps` steps; then the top ops of the last pass."""
    names = [name for name in ("no dropout", "nn.Dropout", "Dropout (adopted)") if name in makers]
    steps_fns = {name: make_step(*make_net(lambda m=makers[name]: _Labeled(m())), bf16) for name in names}
    rows = {
        "step": "training step",
        "forward": "dropout layers (forward)",
        "backward": "autograd::engine::evaluate_function: MulBackward0",
    }
    found: dict[str, dict[str, list[float]]] = {name: {key: [] for key in rows} for name in names}
    tables = {}
    for _ in range(passes):
        for name in names:
            step = steps_fns[name]
            for _ in range(2):
                step()
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    with record_function("training step"):
                        step()
            totals = {event.key: event.cpu_time_total for event in prof.key_averages()}
            for key, label in rows.items():
                found[name][key].append(totals.get(label, 0.0) / steps / 1e3)  # us -> ms per step
            tables[name] = prof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=44
            )
    kind = "bf16 autocast" if bf16 else "fp32"
    print(f"\nprofile, {kind}: ms per step (median of {passes} interleaved profiles of {steps} steps)")
    print(f"{'variant':20s} {'step':>7s} {'dropout fwd':>11s} {'dropout bwd':>11s}")
    for name in names:
        step_ms, fwd, bwd = (statistics.median(found[name][key]) for key in rows)
        print(f"{name:20s} {step_ms:7.2f} {fwd:11.2f} {bwd:11.2f}")
    for name in names[1:]:
        print(f"\n--- {name}, {kind}: top ops by self CPU time over {steps} steps (last profile)")
        print(tables[name])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: time.perf_counter; cpu: this process's CPU time (with --threads 1, steady on a busy machine)",
    )
    parser.add_argument("--compile", action="store_true", help="also torch.compile(F.dropout)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="time only these variants (and no dropout)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops as well")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    makers = variants(args.compile)
    if args.only:
        makers = {name: make for name, make in makers.items() if name in {"no dropout", "nn.Dropout", *args.only}}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"CNN step, batch {BATCH}, p={P}"
    )
    for precision in args.precision:
        bf16 = precision == "bf16"
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        times, first = time_variants(makers, bf16, args.rounds, args.steps, clock)
        base = times["no dropout"]
        print(f"\n{precision}: {args.rounds} rounds x {args.steps} steps")
        header = f"{'variant':26s} {'ms/step':>8s} {'vs none':>8s} {'(q1-q3)':>13s} {'vs nn.Dropout':>14s}"
        print(f"{header} {'best ms':>8s} {'best/none':>9s} {'1st step s':>10s}")
        for name, values in times.items():
            q1, q2, q3 = quartiles([v / b for v, b in zip(values, base, strict=True)])
            to_nn = statistics.median(v / d for v, d in zip(values, times["nn.Dropout"], strict=True))
            print(
                f"{name:26s} {statistics.median(values):8.2f} {q2:8.3f} ({q1:.3f}-{q3:.3f}) {to_nn:14.3f} "
                f"{min(values):8.2f} {min(values) / min(base):9.3f} {first[name]:10.2f}"
            )
        if args.profile:
            profile(makers, bf16)


if __name__ == "__main__":
    main()
