import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.step_times import relu_before_pool
from mnist_study.config.schema import GROUPS
from mnist_study.models.backbones import BACKBONES, build_backbone, parameter_count

from .helpers.configs import shipped

F_, L_, R, D, P = "Flatten", "Linear", "ReLU", "Dropout", "MaxPool2d"
C, B1, B2 = "Conv2d", "BatchNorm1d", "BatchNorm2d"
# docs/DESIGN.md's table of where each regularizer goes, and each network's parameter count.
LAYOUT = {
    ("softmax", "none"): ([F_, L_], 7_850),
    ("softmax", "dropout"): ([F_, D, L_], 7_850),
    ("softmax", "bn"): ([F_, B1, L_], 9_418),
    ("mlp", "none"): ([F_, L_, R, L_, R, L_], 535_818),
    ("mlp", "dropout"): ([F_, L_, R, D, L_, R, D, L_], 535_818),
    ("mlp", "bn"): ([F_, L_, B1, R, L_, B1, R, L_], 536_586),
    # pool before ReLU: the same function as ReLU before pool (test_pooling_before_relu_changes_no_bit)
    ("cnn", "none"): ([C, P, R, C, P, R, F_, L_, R, L_], 421_642),
    ("cnn", "dropout"): ([C, P, R, D, C, P, R, D, F_, L_, R, D, L_], 421_642),
    ("cnn", "bn"): ([C, B2, P, R, C, B2, P, R, F_, L_, B1, R, L_], 421_866),
}


@pytest.mark.parametrize(("model", "regularizer"), LAYOUT)
def test_layers_and_parameter_count(model: str, regularizer: str) -> None:
    net = build_backbone(*shipped(model, regularizer))
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
    net = build_backbone(*shipped(model, regularizer)).train()
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


def test_the_schema_names_exactly_the_models_the_backbones_build() -> None:
    assert list(GROUPS["model"]) == list(BACKBONES)
    assert set(GROUPS["regularizer"]) == {"none", "dropout", "bn"}


@pytest.mark.parametrize("regularizer", ["none", "dropout", "bn"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_pooling_before_relu_changes_no_bit(regularizer: str, bf16: bool) -> None:
    torch.manual_seed(0)
    net = build_backbone(*shipped("cnn", regularizer)).train().to(memory_format=torch.channels_last)
    textbook = relu_before_pool(net)  # the textbook order, the same weights
    assert f"{R} {P}" in " ".join(type(m).__name__ for m in textbook)
    images, labels = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    images[:, :, :7] = 0.0  # whole windows of zero pre-activations: ReLU's kink and max-pool's ties

    def outputs_and_gradients(model: nn.Module) -> list[torch.Tensor]:
        torch.manual_seed(1)  # the same dropout masks
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        return [logits, *(p.grad.clone() for p in model.parameters())]

    ours, theirs = outputs_and_gradients(net), outputs_and_gradients(textbook)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
