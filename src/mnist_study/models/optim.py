"""Optimizers and learning-rate schedules, chosen by name from fixed tables.

Names, not `_target_`s: a checkpoint's hyper-parameters are read back when it is loaded, and a class
path there would be imported and called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

OPTIMIZERS: dict[str, type[Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    total_steps: int,
) -> tuple[Optimizer, LRScheduler | None]:
    """The optimizer and its per-step schedule (None for a constant rate); optimizer.lr is every schedule's peak."""
    options = dict(optimizer)
    built = OPTIMIZERS[options.pop("name")](parameters, **options)
    schedule = dict(scheduler)
    name = schedule.pop("name")
    if name == "onecycle":
        return built, OneCycleLR(built, max_lr=options["lr"], total_steps=total_steps, **schedule)
    if name == "cosine":
        return built, CosineAnnealingLR(built, T_max=total_steps, **schedule)
    return built, None
