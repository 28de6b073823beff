"""Gradient descent on A, B, C from one seeded start, with manual gradients and with torch.autograd's."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_study.atomic_files import write_text_atomically
from mnist_study.errors import UserError
from mnist_study.manual_backprop import autograd_reference, graph
from mnist_study.manual_backprop.backends import BACKENDS, DEVICES, Backend, memory_bytes, resolve_device

Gradients = Callable[..., tuple[float, tuple[Any, Any, Any]]]
ENGINES = ("closed_form", "graph")
HISTORY_FILE = "history.json"
ALLOWED = {
    "k": "an integer >= 1",
    "epochs": "an integer >= 1",
    "lr": "a finite number > 0",
    "seed": "an integer >= 0",
    "init": "uniform or normal",
    "dtype": "float64 or float32",
    "combine": "mul or add",
    "n_samples": "an integer >= 1",
    "engine": " or ".join(ENGINES),
    "backend": " or ".join(BACKENDS),
    "device": ", ".join(DEVICES[:-1]) + " or " + DEVICES[-1],
}
# What one job holds at once, in units of K x K and K x N arrays: A, B, C and their gradients for each
# engine plus the seeded start; the forward's and backward's K x N intermediates (X, Y, U, the slope,
# V, Z, W; dW, dZ, dU, dV, dY) for each engine.
MATRICES_HELD, COLUMNS_HELD = 3 * 2 * 2 + 3, 12 * 2


def estimated_bytes(k: int, n_samples: int, dtype: str) -> int:
    return np.dtype(dtype).itemsize * (MATRICES_HELD * k * k + COLUMNS_HELD * k * n_samples)


def largest_k(n_samples: int, dtype: str, memory: int) -> int:
    """The largest K whose estimate fits in `memory`: the positive root of the quadratic in K."""
    a, b, c = MATRICES_HELD, COLUMNS_HELD * n_samples, -memory / np.dtype(dtype).itemsize
    return int((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))


@dataclass
class Settings:
    k: int = 4
    epochs: int = 200
    lr: float = 0.003
    seed: int = 0
    init: str = "uniform"  # uniform: entries in [0, 1) as in the source reports; normal: N(0, 1/k)
    dtype: str = "float64"
    combine: str = "mul"  # z = u * v (the reports); add: z = u + v
    n_samples: int = 1  # columns of X; the loss is the mean over them of ||w||^2
    engine: str = "closed_form"  # closed_form: the chain rule written out; graph: the computational graph
    backend: str = "numpy"  # the closed form's arrays: numpy, or torch tensors with autograd off
    device: str = "auto"  # cpu | cuda | auto (cuda where present); numpy runs on the CPU only

    def __post_init__(self) -> None:
        def integer(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        checks = {
            "k": integer(self.k) and self.k >= 1,
            "epochs": integer(self.epochs) and self.epochs >= 1,
            "n_samples": integer(self.n_samples) and self.n_samples >= 1,
            "lr": isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and 0 < self.lr < math.inf,
            "init": self.init in ("uniform", "normal"),
            "dtype": self.dtype in ("float64", "float32"),
            "combine": self.combine in ("mul", "add"),
            "engine": self.engine in ENGINES,
            "backend": self.backend in BACKENDS,
            "device": self.device in DEVICES,
            "seed": integer(self.seed) and self.seed >= 0,  # numpy's default_rng refuses negative seeds
        }
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"{name} must be {ALLOWED[name]}, got {getattr(self, name)!r}")
        if self.engine == "graph" and self.backend != "numpy":
            raise UserError(f"backend must be numpy with engine=graph (a NumPy-only engine), got {self.backend!r}")
        if self.backend == "numpy" and self.device == "cuda":
            raise UserError("device must be cpu or auto with backend=numpy (NumPy runs on the CPU), got 'cuda'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("device must be cpu or auto: torch sees no CUDA device here, got 'cuda'")
        self.check_memory()

    def resolved_device(self) -> str:
        return "cpu" if self.backend == "numpy" else resolve_device(self.device)

    def check_memory(self) -> None:
        """Refuse, before allocating anything, a K whose arrays cannot fit in the device's memory."""
        device = self.resolved_device()
        needed, available = estimated_bytes(self.k, self.n_samples, self.dtype), memory_bytes(device)
        if needed <= available:
            return
        where = f"{self.dtype} on this {device} ({available / 1e9:.1f} GB)"
        limit = largest_k(self.n_samples, self.dtype, available)
        if limit < 1:  # not even K = 1: the columns alone are too many
            raise UserError(
                f"n_samples must be smaller for {where}, got {self.n_samples}: it needs about {needed / 1e9:.3g} GB"
            )
        raise UserError(
            f"k must be at most about {limit} with n_samples={self.n_samples} and {where}, got {self.k}: "
            f"it needs about {needed / 1e9:.3g} GB"
        )


def initial_values(s: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A, B, C and X from the seed alone, so every engine starts from the same point."""
    rng = np.random.default_rng(s.seed)
    shapes = [(s.k, s.k)] * 3 + [(s.k, s.n_samples)]
    if s.init == "uniform":
        values = [rng.uniform(0.0, 1.0, shape) for shape in shapes]
    else:
        values = [rng.normal(0.0, 1.0 / np.sqrt(s.k), shape) for shape in shapes]
    return tuple(v.astype(s.dtype) for v in values)  # type: ignore[return-value]


@dataclass
class History:
    settings: dict
    device: str = "cpu"  # where both runs ran (the settings may say auto)
    loss_manual: list[float] = field(default_factory=list)
    loss_autograd: list[float] = field(default_factory=list)
    max_abs_param_diff: list[float] = field(default_factory=list)
    max_abs_grad_diff: list[float] = field(default_factory=list)
    max_rel_grad_error: list[float] = field(default_factory=list)
    final_manual: dict[str, list] = field(default_factory=dict)
    final_autograd: dict[str, list] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        write_text_atomically(directory / HISTORY_FILE, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> History:
        return cls(**json.loads(path.read_text()))


def max_abs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return max(float(np.max(np.abs(m - a))) for m, a in pairs)


def relative_error(manual: tuple[np.ndarray, ...], reference: tuple[np.ndarray, ...]) -> float:
    return max(
        float(np.max(np.abs(m - r)) / max(np.max(np.abs(r)), 1e-300)) for m, r in zip(manual, reference, strict=True)
    )


def descend(s: Settings, on_epoch: Callable[[int, History], None] | None = None) -> History:
    """Both runs on the same device: the manual one on `s.backend`'s arrays, autograd's on torch tensors."""
    device = s.resolved_device()
    backend = Backend(s.backend, device)
    a, b, c, x = initial_values(s)
    manual = [backend.asarray(p) for p in (a, b, c)]
    manual_inputs = backend.asarray(x)
    params = [torch.tensor(p, device=device, requires_grad=True) for p in (a, b, c)]
    inputs = torch.tensor(x, device=device)
    gradients: Gradients = backend.loss_and_gradients if s.engine == "closed_form" else graph.loss_and_gradients
    history = History(settings=asdict(s), device=device)

    for epoch in range(s.epochs):
        loss_m, grads_m = gradients(*manual, manual_inputs, s.combine)
        loss_a = autograd_reference.loss(*params, inputs, s.combine)
        grads_a = torch.autograd.grad(loss_a, params)

        grads_m_host = tuple(backend.to_numpy(g) for g in grads_m)
        grads_a_host = tuple(g.cpu().numpy() for g in grads_a)
        history.loss_manual.append(loss_m)
        history.loss_autograd.append(loss_a.item())
        history.max_abs_param_diff.append(
            max_abs([(backend.to_numpy(m), p.detach().cpu().numpy()) for m, p in zip(manual, params, strict=True)])
        )
        history.max_abs_grad_diff.append(max_abs(list(zip(grads_m_host, grads_a_host, strict=True))))
        history.max_rel_grad_error.append(relative_error(grads_m_host, grads_a_host))
        if on_epoch is not None:
            on_epoch(epoch, history)

        for m, g in zip(manual, grads_m, strict=True):
            m -= s.lr * g
        with torch.no_grad():
            for p, g in zip(params, grads_a, strict=True):
                p -= s.lr * g

    history.final_manual = {name: backend.to_numpy(m).tolist() for name, m in zip("ABC", manual, strict=True)}
    history.final_autograd = {name: p.detach().cpu().numpy().tolist() for name, p in zip("ABC", params, strict=True)}
    return history


def side_by_side(history: History, precision: int = 6, names: str = "ABC") -> str:
    """The optimized A, B, C from both runs next to each other, as the reports print A."""
    blocks = []
    for name in names:
        manual, auto = np.array(history.final_manual[name]), np.array(history.final_autograd[name])
        options = {"precision": precision, "suppress_small": True, "max_line_width": 10_000}
        left = np.array2string(manual, **options).splitlines()
        right = np.array2string(auto, **options).splitlines()
        width = max(len(line) for line in left)
        title = f"{name} (manual){' ' * max(width - len(name) - 9, 1)}   {name} (autograd)"
        rows = [f"{line.ljust(width)}   {other}" for line, other in zip(left, right, strict=True)]
        diff = float(np.max(np.abs(manual - auto)))
        blocks.append("\n".join([title, *rows, f"max |manual - autograd| = {diff:.3e}"]))
    return "\n\n".join(blocks)
