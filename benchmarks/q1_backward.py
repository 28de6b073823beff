"""The manual backward pass against torch.autograd's, same inputs, same device:

    python -m benchmarks.q1_backward [--k 1024] [--n-samples 1024] [--repeats 7]
                                                [--backend both|numpy|torch] [--device auto|cpu|cuda]

Only the backward is timed (each forward pass is done beforehand). The contenders take turns, one
repeat each, and each keeps its best of `repeats`: a machine that slows down for a while slows them
all. The closed form runs the same lines on NumPy arrays (CPU only) and on torch tensors with autograd
off (the `torch` backend, on the chosen device). All the backward passes are dominated by the same four
K x K x N matrix products, so the tool also times those products alone in each library: the gap
between the two BLAS libraries bounds what any NumPy backward can reach.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mnist_study.manual_backprop import autograd_reference, closed_form, graph
from mnist_study.manual_backprop.backends import DEVICES, Backend, resolve_device
from mnist_study.manual_backprop.descent import Settings, initial_values


@dataclass
class Contender:
    setup: Callable[[], Any]  # untimed: builds what `timed` consumes (the forward pass)
    timed: Callable[[Any], object]
    synchronize: Callable[[], None] = lambda: None
    times: list[float] = field(default_factory=list)


def time_in_turns(contenders: dict[str, Contender], repeats: int) -> None:
    """One untimed warm-up round, then `repeats` rounds in which every contender runs once."""
    for round_number in range(repeats + 1):
        for contender in contenders.values():
            state = contender.setup()
            contender.synchronize()
            start = time.perf_counter()
            contender.timed(state)
            contender.synchronize()
            if round_number > 0:
                contender.times.append(time.perf_counter() - start)


def multiply_all(pairs: Sequence[tuple[Any, Any]]) -> None:
    for left, right in pairs:
        left @ right


def contenders_for(
    arrays: tuple[np.ndarray, ...], backends: Sequence[str], device: str
) -> tuple[dict[str, Contender], str]:
    """The timed backward passes, keyed by the name printed; and the name of autograd's, the reference."""
    a, b, c, x = arrays
    contenders: dict[str, Contender] = {}
    if "numpy" in backends and device == "cpu":
        contenders["closed form, numpy"] = Contender(
            lambda: closed_form.forward(a, b, c, x), lambda f: closed_form.backward(c, f)
        )
    if "torch" in backends:
        torch_backend = Backend("torch", device)
        a_t, b_t, c_t, x_t = (torch_backend.asarray(p) for p in arrays)

        def torch_forward() -> closed_form.Forward:
            with torch.no_grad():
                return closed_form.forward(a_t, b_t, c_t, x_t, ops=torch_backend.ops)

        def torch_backward(f: closed_form.Forward) -> object:
            with torch.no_grad():
                return closed_form.backward(c_t, f)

        contenders["closed form, torch"] = Contender(torch_forward, torch_backward, torch_backend.synchronize)
    if "numpy" in backends and device == "cpu":
        contenders["graph engine, numpy"] = Contender(
            lambda: graph.build(a, b, c, x)["L"], lambda loss: loss.backward()
        )

    on_device = [torch.tensor(p, device=device) for p in arrays]

    def autograd_forward() -> tuple[torch.Tensor, list[torch.Tensor]]:
        params = [p.clone().requires_grad_() for p in on_device[:3]]
        return autograd_reference.loss(*params, on_device[3]), params

    reference = "torch.autograd"
    contenders[reference] = Contender(
        autograd_forward, lambda state: torch.autograd.grad(*state), Backend("torch", device).synchronize
    )
    return contenders, reference


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--n-samples", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", choices=("both", "numpy", "torch"), default="both")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here (use cpu or auto)")
    backends = ("numpy", "torch") if args.backend == "both" else (args.backend,)
    arrays = initial_values(Settings(k=args.k, n_samples=args.n_samples, init="normal"))
    contenders, reference = contenders_for(arrays, backends, device)

    a, b, c, x = arrays
    f = closed_form.forward(a, b, c, x)
    # same shapes as dC = dW Z^T, dZ = C^T dW, dA = dY X^T, dB = dV X^T (W stands in for each K x N gradient)
    products = [(f.w, f.z.T), (c.T, f.w), (f.w, x.T), (f.w, x.T)]
    as_tensors = [(torch.tensor(left, device=device), torch.tensor(right, device=device)) for left, right in products]
    floors = {f"torch ({device})": Contender(lambda: as_tensors, multiply_all, Backend("torch", device).synchronize)}
    if device == "cpu":
        floors["NumPy"] = Contender(lambda: products, multiply_all)
    time_in_turns({**contenders, **{f"products {name}": floor for name, floor in floors.items()}}, args.repeats)

    where = f"{torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
    print(
        f"K={args.k}, N={args.n_samples}, float64, {device} ({where}); backward only, "
        f"best of {args.repeats} (median in brackets):"
    )
    best_reference = min(contenders[reference].times)
    width = max(len(name) for name in contenders)
    for name, contender in contenders.items():
        best, median = min(contender.times), statistics.median(contender.times)
        ratio = "" if name == reference else f"   {best / best_reference:.2f} x autograd"
        print(f"  {name.ljust(width)} {best * 1e3:8.1f} ms  ({median * 1e3:.1f}){ratio}")
    if device != "cpu":
        print("  (NumPy runs on the CPU only: rerun with --device cpu to time it)")
    floor_times = {name: min(floor.times) for name, floor in floors.items()}
    listed = ", ".join(f"{name} {best * 1e3:.1f} ms" for name, best in floor_times.items())
    print(f"the four K x K x N matrix products alone: {listed}")
    if "NumPy" in floor_times:
        print(f"  (NumPy / torch: {floor_times['NumPy'] / floor_times[f'torch ({device})']:.2f} x)")


if __name__ == "__main__":
    main()
