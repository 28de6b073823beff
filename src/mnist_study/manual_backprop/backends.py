"""Where the closed form runs: NumPy arrays on the CPU, or torch tensors with autograd off (CPU or CUDA).

closed_form.py is written once for both array types; a backend only supplies the array functions it
needs (ArrayOps) and moves arrays in and out. torch.autograd plays no part in the torch backend: its
tensors never require gradients and it runs under torch.no_grad().
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mnist_study.manual_backprop import closed_form
from mnist_study.manual_backprop.closed_form import ArrayOps, Combine

BACKENDS = ("numpy", "torch")
DEVICES = ("auto", "cpu", "cuda")
TORCH = ArrayOps(exp=torch.exp, abs=torch.abs, where=torch.where)


def resolve_device(device: str) -> str:
    """auto means CUDA where torch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def memory_bytes(device: str) -> int:
    """All the memory of the device (not what is free now: other processes come and go)."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[1]
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Backend:
    name: str  # numpy | torch
    device: str  # cpu | cuda (resolved, never auto)

    @property
    def ops(self) -> ArrayOps:
        return closed_form.NUMPY if self.name == "numpy" else TORCH

    def asarray(self, values: np.ndarray) -> Any:
        """A copy of `values` in this backend's array type, on its device."""
        if self.name == "numpy":
            return values.copy()
        return torch.tensor(values, device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array if self.name == "numpy" else array.cpu().numpy()

    def loss_and_gradients(
        self, a: Any, b: Any, c: Any, x: Any, combine: Combine = "mul"
    ) -> tuple[float, tuple[Any, Any, Any]]:
        if self.name == "numpy":
            return closed_form.loss_and_gradients(a, b, c, x, combine)
        with torch.no_grad():
            return closed_form.loss_and_gradients(a, b, c, x, combine, TORCH)

    def synchronize(self) -> None:
        """Wait for the device's queued work, so that a timer stops when the work is done."""
        if self.device == "cuda":
            torch.cuda.synchronize()
