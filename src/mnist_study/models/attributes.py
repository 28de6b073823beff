"""A cheaper nn.Module.__setattr__ for the plain attributes that Lightning and torchmetrics set every step."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class FastPlainAttributes(nn.Module):
    """nn.Module.__setattr__ looks the name up among the parameters, submodules and buffers on every assignment
    (about 2 µs); Lightning assigns a LightningModule's current hook name around each hook it calls, some thirty
    times a training step, and torchmetrics a Metric's update count every update. A name already held as a plain
    attribute (in the instance's __dict__, where nn.Module keeps nothing it registers) that gets a value nn.Module
    would not register (neither a tensor nor a module) is set directly: where nn.Module.__setattr__ ends up too."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__ and not isinstance(value, (Tensor, nn.Module)):
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)
