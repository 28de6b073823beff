"""The same function in torch, differentiated by torch.autograd: the reference the manual engines must match."""

from __future__ import annotations

import numpy as np
import torch

from mnist_study.manual_backprop.closed_form import Combine


def loss(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, x: torch.Tensor, combine: Combine = "mul") -> torch.Tensor:
    u = torch.sigmoid(a @ x)
    v = b @ x
    z = u * v if combine == "mul" else u + v
    w = c @ z
    return (w * w).sum() / x.shape[1]


def loss_and_gradients(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, x: np.ndarray, combine: Combine = "mul"
) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    params = [torch.from_numpy(p).requires_grad_() for p in (a, b, c)]
    value = loss(*params, torch.from_numpy(x), combine)
    grads = torch.autograd.grad(value, params)
    return value.item(), tuple(g.numpy() for g in grads)  # type: ignore[return-value]
