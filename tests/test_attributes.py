"""FastPlainAttributes (the classifier's and its metric's cheaper __setattr__) still registers, replaces and refuses
what nn.Module does."""

import pytest
import torch
from torch import nn

from mnist_study.models.attributes import FastPlainAttributes
from mnist_study.models.metrics import LossAndAccuracy


class Net(FastPlainAttributes):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.register_buffer("running", torch.zeros(2))
        self.layer = nn.Linear(2, 2)
        self.name = "plain"


def test_parameters_buffers_and_submodules_are_registered_as_nn_module_does() -> None:
    net = Net()
    net.name = "changed"  # the fast path
    net.extra = nn.Parameter(torch.ones(1))  # a new parameter
    net.running = torch.ones(2)  # a buffer replaced by a plain tensor stays a buffer
    net.layer = nn.Linear(2, 3)  # a submodule replaced
    assert net.name == "changed" and "name" not in net.state_dict()
    assert set(dict(net.named_parameters())) == {"weight", "extra", "layer.weight", "layer.bias"}
    assert torch.equal(net.state_dict()["running"], torch.ones(2))
    assert net.layer.out_features == 3


def test_a_registered_name_still_refuses_a_plain_value() -> None:
    net = Net()
    with pytest.raises(TypeError, match="cannot assign"):
        net.weight = "not a parameter"  # a parameter's name is not a plain attribute: nn.Module's own check
    net.layer = None  # allowed by nn.Module: the submodule slot emptied, not a new plain attribute
    assert net.layer is None and "layer" not in net.__dict__


def test_torchmetrics_constants_stay_constant() -> None:
    metric = LossAndAccuracy()
    with pytest.raises(RuntimeError, match="Can't change const"):
        metric.full_state_update = True
