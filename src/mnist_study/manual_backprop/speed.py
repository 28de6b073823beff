"""The manual backward pass against torch.autograd's, same inputs, same CPU:

    python -m mnist_study.manual_backprop.speed [--k 1024] [--n-samples 1024] [--repeats 7]

Only the backward is timed on both sides (the forward pass is done beforehand); best of `repeats`.
Both backward passes are dominated by the same four K x K x N matrix products, so the tool also times
those products alone in each library: the gap between the two BLAS libraries bounds what any NumPy
backward can reach.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mnist_study.manual_backprop import autograd_reference, closed_form, graph
from mnist_study.manual_backprop.descent import Settings, initial_values


def best_of(repeats: int, setup: Callable[[], object], timed: Callable[[object], object]) -> float:
    times = []
    for _ in range(repeats):
        state = setup()
        start = time.perf_counter()
        timed(state)
        times.append(time.perf_counter() - start)
    return min(times)


def multiply_all(pairs: Sequence[tuple[Any, Any]]) -> None:
    for left, right in pairs:
        left @ right


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--n-samples", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    a, b, c, x = initial_values(Settings(k=args.k, n_samples=args.n_samples, init="normal"))

    manual = best_of(args.repeats, lambda: closed_form.forward(a, b, c, x), lambda f: closed_form.backward(c, f))

    def graph_forward() -> graph.Node:
        return graph.build(a, b, c, x)["L"]

    engine = best_of(args.repeats, graph_forward, lambda loss: loss.backward())

    def torch_forward() -> tuple[torch.Tensor, list[torch.Tensor]]:
        params = [torch.from_numpy(p).requires_grad_() for p in (a, b, c)]
        return autograd_reference.loss(*params, torch.from_numpy(x)), params

    autograd = best_of(args.repeats, torch_forward, lambda state: torch.autograd.grad(*state))

    f = closed_form.forward(a, b, c, x)
    # same shapes as dC = dW Z^T, dZ = C^T dW, dA = dY X^T, dB = dV X^T (W stands in for each K x N gradient)
    products = [(f.w, f.z.T), (c.T, f.w), (f.w, x.T), (f.w, x.T)]
    numpy_gemms = best_of(args.repeats, lambda: products, multiply_all)
    as_tensors = [(torch.from_numpy(left), torch.from_numpy(right)) for left, right in products]
    torch_gemms = best_of(args.repeats, lambda: as_tensors, multiply_all)
    print(
        f"K={args.k}, N={args.n_samples}, float64, {torch.get_num_threads()} threads; "
        f"backward only, best of {args.repeats}:"
    )
    print(f"  closed form  {manual * 1e3:8.1f} ms   ({manual / autograd:.2f} x autograd)")
    print(f"  graph engine {engine * 1e3:8.1f} ms   ({engine / autograd:.2f} x autograd)")
    print(f"  autograd     {autograd * 1e3:8.1f} ms")
    print(
        f"the four K x K x N matrix products alone: NumPy {numpy_gemms * 1e3:.1f} ms, torch {torch_gemms * 1e3:.1f} ms "
        f"({numpy_gemms / torch_gemms:.2f} x)"
    )


if __name__ == "__main__":
    main()
