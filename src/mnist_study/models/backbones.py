"""The three networks of the study and where each regularizer goes in them.

Regularizers follow the literature: after every hidden layer, batch norm between the affine map and the
activation (Ioffe & Szegedy 2015), dropout after the activation (Srivastava et al. 2014). Softmax
regression has no hidden layer, so both act on its input. A layer followed by batch norm has no bias:
BN's shift replaces it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from mnist_study.models.dropout import Dropout

IMAGE_SIZE, NUM_CLASSES = 28, 10
DROPOUT_MASKS: dict[str, type[nn.Dropout]] = {"fast": Dropout, "torch": nn.Dropout}


class Regularizer:
    """Where the `regularizer` group's choice puts its layers. Trusts a validated config (config.schema)."""

    def __init__(self, name: str = "none", rate: float = 0.0, momentum: float = 0.1, mask: str = "fast") -> None:
        self.name, self.rate, self.momentum, self.mask = name, rate, momentum, mask

    @property
    def bn(self) -> bool:
        return self.name == "bn"

    def normalization(self, features: int, spatial: bool = False) -> list[nn.Module]:
        if not self.bn:
            return []
        return [(nn.BatchNorm2d if spatial else nn.BatchNorm1d)(features, momentum=self.momentum)]

    def dropout(self) -> list[nn.Module]:
        """regularizer.mask=fast: nn.Dropout's semantics with a mask cheaper to draw on the CPU (models/dropout.py;
        other masks, so other exact numbers); torch: nn.Dropout itself."""
        return [DROPOUT_MASKS[self.mask](self.rate)] if self.name == "dropout" else []


def softmax_regression(reg: Regularizer) -> nn.Sequential:
    inputs = IMAGE_SIZE * IMAGE_SIZE
    return nn.Sequential(nn.Flatten(), *reg.normalization(inputs), *reg.dropout(), nn.Linear(inputs, NUM_CLASSES))


def mlp(reg: Regularizer, hidden_sizes: Sequence[int] = (512, 256)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = IMAGE_SIZE * IMAGE_SIZE
    for size in hidden_sizes:
        layers += [nn.Linear(width, size, bias=not reg.bn), *reg.normalization(size), nn.ReLU(), *reg.dropout()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, NUM_CLASSES))


def cnn(
    reg: Regularizer, channels: Sequence[int] = (32, 64), kernel_size: int = 3, hidden_size: int = 128
) -> nn.Sequential:
    """LeNet-sized: [conv, (bn), relu, max-pool 2, (dropout)] per entry of `channels`, then one hidden fc.

    The pool runs before the ReLU: ReLU is monotonic, so max-pool and ReLU commute, forward and backward, bit
    for bit (tests/test_backbones.py), and the ReLU then touches a quarter of the elements."""
    layers: list[nn.Module] = []
    in_channels, side = 1, IMAGE_SIZE
    for out_channels in channels:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not reg.bn)
        layers += [conv, *reg.normalization(out_channels, spatial=True), nn.MaxPool2d(2), nn.ReLU(), *reg.dropout()]
        in_channels, side = out_channels, side // 2
    flat = in_channels * side * side
    layers += [nn.Flatten(), nn.Linear(flat, hidden_size, bias=not reg.bn), *reg.normalization(hidden_size)]
    layers += [nn.ReLU(), *reg.dropout(), nn.Linear(hidden_size, NUM_CLASSES)]
    return nn.Sequential(*layers)


BACKBONES: dict[str, Callable[..., nn.Sequential]] = {"softmax": softmax_regression, "mlp": mlp, "cnn": cnn}


def build_backbone(model: Mapping[str, Any], regularizer: Mapping[str, Any]) -> nn.Sequential:
    """`model` and `regularizer` are the Hydra groups of the same names: a `name` plus that builder's arguments."""
    options = dict(model)
    return BACKBONES[options.pop("name")](Regularizer(**regularizer), **options)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
