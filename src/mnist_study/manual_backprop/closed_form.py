"""The function of the study and its gradients written out by the chain rule, in NumPy.

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

from dataclasses import dataclass
from typing import Literal

import numpy as np

Combine = Literal["mul", "add"]


def sigmoid(y: np.ndarray) -> np.ndarray:
    """Never exponentiates a positive number, so |y| in the hundreds neither overflows nor warns."""
    e = np.exp(-np.abs(y))
    return np.where(y >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass
class Forward:
    x: np.ndarray
    u: np.ndarray
    slope: np.ndarray  # du/dy = u (1 - u), the sigmoid's local derivative
    v: np.ndarray
    z: np.ndarray
    w: np.ndarray
    loss: float


def forward(a: np.ndarray, b: np.ndarray, c: np.ndarray, x: np.ndarray, combine: Combine = "mul") -> Forward:
    u = sigmoid(a @ x)
    v = b @ x
    z = u * v if combine == "mul" else u + v
    w = c @ z
    loss = float(np.sum(w * w) / x.shape[1])
    return Forward(x, u, u * (1.0 - u), v, z, w, loss)


def backward(c: np.ndarray, f: Forward, combine: Combine = "mul") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    a: np.ndarray, b: np.ndarray, c: np.ndarray, x: np.ndarray, combine: Combine = "mul"
) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    f = forward(a, b, c, x, combine)
    return f.loss, backward(c, f, combine)
