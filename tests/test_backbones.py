import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_study.backbones import build_backbone, parameter_count

MODELS = {
    "softmax": {"name": "softmax"},
    "mlp": {"name": "mlp", "hidden_sizes": [512, 256]},
    "cnn": {"name": "cnn", "channels": [32, 64], "kernel_size": 3, "hidden_size": 128},
}
REGULARIZERS = {"none": {"name": "none"}, "dropout": {"name": "dropout", "rate": 0.2}, "bn": {"name": "bn"}}

F_, L_, R, D, P = "Flatten", "Linear", "ReLU", "Dropout", "MaxPool2d"
C, B1, B2 = "Conv2d", "BatchNorm1d", "BatchNorm2d"
# The README's table of where each regularizer goes, and each network's parameter count.
LAYOUT = {
    ("softmax", "none"): ([F_, L_], 7_850),
    ("softmax", "dropout"): ([F_, D, L_], 7_850),
    ("softmax", "bn"): ([F_, B1, L_], 9_418),
    ("mlp", "none"): ([F_, L_, R, L_, R, L_], 535_818),
    ("mlp", "dropout"): ([F_, L_, R, D, L_, R, D, L_], 535_818),
    ("mlp", "bn"): ([F_, L_, B1, R, L_, B1, R, L_], 536_586),
    ("cnn", "none"): ([C, R, P, C, R, P, F_, L_, R, L_], 421_642),
    ("cnn", "dropout"): ([C, R, P, D, C, R, P, D, F_, L_, R, D, L_], 421_642),
    ("cnn", "bn"): ([C, B2, R, P, C, B2, R, P, F_, L_, B1, R, L_], 421_866),
}


@pytest.mark.parametrize(("model", "regularizer"), LAYOUT)
def test_layers_and_parameter_count(model: str, regularizer: str) -> None:
    net = build_backbone(MODELS[model], REGULARIZERS[regularizer])
    layers, parameters = LAYOUT[model, regularizer]
    assert [type(m).__name__ for m in net] == layers
    assert parameter_count(net) == parameters
    if regularizer == "bn":  # BN's shift replaces the bias of the layer before it
        for before, after in itertools.pairwise(net):
            if isinstance(after, (nn.BatchNorm1d, nn.BatchNorm2d)) and isinstance(before, (nn.Linear, nn.Conv2d)):
                assert before.bias is None


@pytest.mark.parametrize(("model", "regularizer"), LAYOUT)
def test_training_steps_lower_the_loss_and_reach_every_parameter(model: str, regularizer: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(MODELS[model], REGULARIZERS[regularizer]).train()
    images, labels = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def batch_loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks every time
        return F.cross_entropy(net(images), labels)

    before = batch_loss().item()
    for _ in range(5):
        optimizer.zero_grad()
        batch_loss().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        optimizer.step()
    assert batch_loss().item() < before
    assert net(images).shape == (32, 10)


def test_unknown_names_and_bad_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet': choose one of softmax, mlp, cnn"):
        build_backbone({"name": "resnet"}, REGULARIZERS["none"])
    with pytest.raises(ValueError, match="unknown regularizer 'l2'"):
        build_backbone(MODELS["mlp"], {"name": "l2"})
    with pytest.raises(ValueError, match=r"regularizer.rate must be in \[0, 1\), got 1.0"):
        build_backbone(MODELS["mlp"], {"name": "dropout", "rate": 1.0})
