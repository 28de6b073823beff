"""The function of the study and its gradients written out by the chain rule, once for NumPy arrays
and torch tensors alike (only `@`, `*`, `.T`, `.sum()` and the three functions of `ArrayOps`).

For a batch X in R^{K x N} (each column one input x):

    Y = A X,  U = sigma(Y),  V = B X,  Z = U * V (or U + V),  W = C Z,  L = (1/N) sum_n ||w_n||^2

With N = 1 this is the study's L = ||w||^2; averaging over the columns keeps the step size independent
of N. Reading the chain backwards, each line of `backward` is one link:

    dL/dW = 2 W / N
    dL/dC = dL/dW Z^T                        (w = C z)
    dL/dZ = C^T dL/dW
    dL/dU = dL/dZ * V,   dL/dV = dL/dZ * U   (z = u * v;  for z = u + v both are dL/dZ)
    dL/dY = dL/dU * U * (1 - U)              (sigma' = sigma (1 - sigma), kept from the forward pass)
    dL/dA = dL/dY X^T                        (y = A x)
    dL/dB = dL/dV X^T                        (v = B x)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Combine = Literal["mul", "add"]
Array = TypeVar("Array", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class ArrayOps:
    """The functions the closed form needs beyond operators, from the array's own library."""

    exp: Callable[[Any], Any]
    abs: Callable[[Any], Any]
    where: Callable[[Any, Any, Any], Any]


NUMPY = ArrayOps(exp=np.exp, abs=np.abs, where=np.where)


def sigmoid(y: Array, ops: ArrayOps = NUMPY) -> Array:
    """Never exponentiates a positive number, so |y| in the hundreds neither overflows nor warns."""
    e = ops.exp(-ops.abs(y))
    return ops.where(y >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass
class Forward:
    x: Any  # every array field holds the type of the inputs: np.ndarray or torch.Tensor
    u: Any
    slope: Any  # du/dy = u (1 - u), the sigmoid's local derivative
    v: Any
    z: Any
    w: Any
    loss: float


def forward(a: Array, b: Array, c: Array, x: Array, combine: Combine = "mul", ops: ArrayOps = NUMPY) -> Forward:
    u = sigmoid(a @ x, ops)
    v = b @ x
    z = u * v if combine == "mul" else u + v
    w = c @ z
    loss = float((w * w).sum() / x.shape[1])
    return Forward(x, u, u * (1.0 - u), v, z, w, loss)


def backward(c: Array, f: Forward, combine: Combine = "mul") -> tuple[Array, Array, Array]:
    """(dL/dA, dL/dB, dL/dC) from the forward pass's intermediates, one link of the chain per line."""
    dw = (2.0 / f.x.shape[1]) * f.w
    dc = dw @ f.z.T
    dz = c.T @ dw
    du = dz * f.v if combine == "mul" else dz
    dv = dz * f.u if combine == "mul" else dz
    dy = du * f.slope
    da = dy @ f.x.T
    db = dv @ f.x.T
    return da, db, dc


def loss_and_gradients(
    a: Array, b: Array, c: Array, x: Array, combine: Combine = "mul", ops: ArrayOps = NUMPY
) -> tuple[float, tuple[Array, Array, Array]]:
    f = forward(a, b, c, x, combine, ops)
    return f.loss, backward(c, f, combine)
