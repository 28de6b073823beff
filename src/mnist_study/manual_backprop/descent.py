"""Gradient descent on A, B, C from one seeded start, with manual gradients and with torch.autograd's."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mnist_study.manual_backprop import autograd_reference, closed_form, graph

Gradients = Callable[..., tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]]
ENGINES: dict[str, Gradients] = {"closed_form": closed_form.loss_and_gradients, "graph": graph.loss_and_gradients}
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        def integer(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        checks = [
            ("k", integer(self.k) and self.k >= 1, "an integer >= 1"),
            ("epochs", integer(self.epochs) and self.epochs >= 1, "an integer >= 1"),
            ("n_samples", integer(self.n_samples) and self.n_samples >= 1, "an integer >= 1"),
            ("lr", isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0, "a number > 0"),
            ("init", self.init in ("uniform", "normal"), "uniform or normal"),
            ("dtype", self.dtype in ("float64", "float32"), "float64 or float32"),
            ("combine", self.combine in ("mul", "add"), "mul or add"),
            ("engine", self.engine in ENGINES, " or ".join(ENGINES)),
            ("seed", integer(self.seed), "an integer"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")


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
    loss_manual: list[float] = field(default_factory=list)
    loss_autograd: list[float] = field(default_factory=list)
    max_abs_param_diff: list[float] = field(default_factory=list)
    max_abs_grad_diff: list[float] = field(default_factory=list)
    max_rel_grad_error: list[float] = field(default_factory=list)
    final_manual: dict[str, list] = field(default_factory=dict)
    final_autograd: dict[str, list] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        (directory / HISTORY_FILE).write_text(json.dumps(asdict(self)))

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
    a, b, c, x = initial_values(s)
    manual = [a.copy(), b.copy(), c.copy()]
    params = [torch.from_numpy(p.copy()).requires_grad_() for p in (a, b, c)]
    inputs = torch.from_numpy(x)
    engine = ENGINES[s.engine]
    history = History(settings=asdict(s))

    for epoch in range(s.epochs):
        loss_m, grads_m = engine(*manual, x, s.combine)
        loss_a = autograd_reference.loss(*params, inputs, s.combine)
        grads_a = tuple(g.numpy() for g in torch.autograd.grad(loss_a, params))

        history.loss_manual.append(loss_m)
        history.loss_autograd.append(loss_a.item())
        history.max_abs_param_diff.append(
            max_abs([(m, p.detach().numpy()) for m, p in zip(manual, params, strict=True)])
        )
        history.max_abs_grad_diff.append(max_abs(list(zip(grads_m, grads_a, strict=True))))
        history.max_rel_grad_error.append(relative_error(grads_m, grads_a))
        if on_epoch is not None:
            on_epoch(epoch, history)

        for m, g in zip(manual, grads_m, strict=True):
            m -= s.lr * g
        with torch.no_grad():
            for p, g in zip(params, grads_a, strict=True):
                p -= s.lr * torch.from_numpy(g)

    history.final_manual = {name: m.tolist() for name, m in zip("ABC", manual, strict=True)}
    history.final_autograd = {name: p.detach().numpy().tolist() for name, p in zip("ABC", params, strict=True)}
    return history


def side_by_side(history: History, precision: int = 6) -> str:
    """The optimized A, B, C from both runs next to each other, as the reports print A."""
    blocks = []
    for name in "ABC":
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
