"""nn.Dropout with a mask that is cheaper to draw on the CPU (regularizer.mask=fast, the default).

On the CPU, nn.Dropout draws its mask with `bernoulli_`, which costs more than the rest of a dropout layer; in the
study's CNN the dropout layers are a large share of a training step (docs/DESIGN.md has the measurements,
`python -m benchmarks.dropout_masks` repeats them). `Dropout` is nn.Dropout with only the mask generator replaced:
32 random bits per element from torch's global CPU generator, 64 at a time (`random_` over the full int64 range,
read as int32 pairs, in the activation's memory order), compared with a threshold into a bool tensor and widened to
the input's dtype through a uint8 view. Every op after the draw is vectorized; comparing straight into a float
tensor, masked_fill, torch.where and multiplying by a bool tensor are not, and each costs more than drawing the
bits. From there it is nn.Dropout's own arithmetic: the 0/1 mask is divided by 1 - p in the input's dtype and
multiplied in, and autograd multiplies the gradient by the same tensor, so kept values, gradients and the memory
kept for backward are nn.Dropout's for the same mask. An element is dropped with probability round(p * 2**32) /
2**32 (p to within 1.2e-10). Masks depend on the global seed only (not on the thread count), so runs stay bit-for-bit
reproducible on one machine; but they are not nn.Dropout's masks, so the exact numbers of a dropout run differ from
regularizer.mask=torch's (not their distribution). Off the CPU (CUDA has a fused kernel), under torch.compile
(AOTAutograd fails on the int32 view of the int64 draw), with inplace=True, in eval mode and for p = 0 it is
F.dropout itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def keep_mask(like: Tensor, p: float) -> Tensor:
    """A tensor with the dtype, shape and memory layout of `like` (a CPU tensor), 0 with probability
    round(p * 2**32) / 2**32 and 1 otherwise, from torch's global CPU generator."""
    mask = torch.empty_like(like)  # the same strides as `like` when it is dense (e.g. channels_last)
    n = mask.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
    bits = layout_like(words.view(torch.int32)[:n], mask)
    threshold = min(round(p * 2**32), 2**32 - 1) - 2**31  # P(bits < threshold) = round(p * 2**32) / 2**32
    return mask.copy_(torch.ge(bits, threshold).view(torch.uint8))


def layout_like(flat: Tensor, like: Tensor) -> Tensor:
    """`flat` (1-D, in memory order) viewed with the shape and strides of the dense tensor `like`, so that the
    ops that combine them run in one layout; row-major if `like` is not dense."""
    if like.is_contiguous():
        return flat.view(like.shape)
    order = sorted(range(like.dim()), key=lambda d: like.stride(d), reverse=True)
    view = flat.view([like.shape[d] for d in order]).permute([order.index(d) for d in range(like.dim())])
    if all(view.stride(d) == like.stride(d) for d in range(like.dim()) if like.shape[d] > 1):
        return view
    return flat.view(like.shape)


def dropout(input: Tensor, p: float, training: bool = True, inplace: bool = False) -> Tensor:
    """F.dropout with the faster CPU mask (see the module's docstring); p in [0, 1) (Dropout checks it)."""
    if not training or p == 0.0:
        return input
    if input.device.type != "cpu" or inplace or input.numel() == 0 or torch.compiler.is_compiling():
        return F.dropout(input, p, True, inplace)
    return input * keep_mask(input, p).div_(1.0 - p)  # nn.Dropout's arithmetic: noise / (1 - p), then multiply


class Dropout(nn.Dropout):
    """nn.Dropout (inverted: kept values times 1 / (1 - p), identity in eval mode) with the faster CPU mask of
    this module; p must be in [0, 1). A subclass, so isinstance(m, nn.Dropout) holds and model summaries and
    layer listings still read Dropout."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        super().__init__(p, inplace)

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training, self.inplace)
