"""mnist_study.models.dropout.Dropout keeps nn.Dropout's semantics; only the random masks differ."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mnist_study.models.backbones import build_backbone, parameter_count
from mnist_study.models.dropout import Dropout, dropout

from .helpers.configs import shipped

MODELS = ("softmax", "mlp", "cnn")
DTYPES = (torch.float32, torch.bfloat16)


def activations(dtype: torch.dtype = torch.float32, seed: int = 123) -> Tensor:
    """A channels_last activation like the CNN's first dropout input, with no exact zeros."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 32, 14, 14, generator=generator).add_(0.5).to(dtype)
    return x.contiguous(memory_format=torch.channels_last)


def apply(p: float, x: Tensor, seed: int = 0, training: bool = True) -> Tensor:
    torch.manual_seed(seed)
    return Dropout(p).train(training)(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.75])
def test_kept_values_are_scaled_by_exactly_one_over_one_minus_p(p: float, dtype: torch.dtype) -> None:
    x = activations(dtype)
    out = apply(p, x)
    kept = out != 0
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out[kept], x[kept] * (1 / (1 - p)))  # 1.25, 2 and 4: exact in bf16 too


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_arithmetic_is_nn_dropouts_for_the_same_mask(p: float, dtype: torch.dtype) -> None:
    x = activations(dtype)
    out = apply(p, x)
    noise = (out != 0).to(dtype).div_(1 - p)  # what nn.Dropout does with its mask: noise / (1 - p), times x
    assert torch.equal(out, x * noise)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_fraction_dropped_is_p(p: float) -> None:
    out = apply(p, torch.ones(1_000_000))
    dropped = out == 0
    assert abs(dropped.float().mean().item() - p) < 0.002  # sd sqrt(p(1-p)/1e6) <= 5e-4
    # every element gets its own bits: both halves of each 64-bit draw (even and odd positions) drop at rate p
    assert abs(dropped[0::2].float().mean().item() - p) < 0.003
    assert abs(dropped[1::2].float().mean().item() - p) < 0.003


@pytest.mark.parametrize("dtype", DTYPES)
def test_fraction_dropped_on_channels_last_activations(dtype: torch.dtype) -> None:
    out = apply(0.2, activations(dtype))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert abs((out == 0).float().mean().item() - 0.2) < 0.005  # 401,408 elements
    per_channel = (out == 0).float().mean(dim=(0, 2, 3))
    assert per_channel.min() > 0.17 and per_channel.max() < 0.23  # 6,272 per channel: sd 0.005


def test_identity_in_eval_mode() -> None:
    x = activations()
    module = Dropout(0.2).eval()
    before = torch.get_rng_state()
    assert module(x) is x
    assert dropout(x, 0.2, training=False) is x
    assert torch.equal(torch.get_rng_state(), before)  # and it draws no random numbers


def test_p_zero_is_identity_in_training() -> None:
    x = activations()
    assert apply(0.0, x) is x


def test_same_seed_gives_the_same_mask_and_another_seed_another() -> None:
    x = activations()
    first, again, other = apply(0.2, x, seed=7), apply(0.2, x, seed=7), apply(0.2, x, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first == 0, other == 0)
    assert ((first == 0) != (other == 0)).float().mean() > 0.25  # independent masks differ in 2p(1-p) = 32 %


def test_consecutive_calls_draw_fresh_masks() -> None:
    x = activations()
    torch.manual_seed(0)
    module = Dropout(0.2)
    assert not torch.equal(module(x) == 0, module(x) == 0)


def test_mask_does_not_depend_on_the_thread_count() -> None:
    x = activations()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = apply(0.2, x)
        torch.set_num_threads(max(2, threads))
        several = apply(0.2, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, several)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_is_the_mask_times_the_scale(dtype: torch.dtype) -> None:
    x = activations(dtype).requires_grad_()
    out = apply(0.2, x)
    grad = torch.randn(x.shape).to(dtype)  # row-major, as Flatten's backward hands it to the last pool's dropout
    out.backward(grad)
    kept = (out != 0).to(dtype)
    assert x.grad is not None and x.grad.dtype == dtype
    assert torch.equal(x.grad, grad * (kept * 1.25))
    assert torch.all(x.grad[out == 0] == 0)


def test_works_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), Dropout(0.2), nn.Linear(512, 10))
    inputs = torch.randn(512, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = net[1](net[0](inputs))
        torch.manual_seed(1)
        dropped = net[2](hidden)
        loss = net[3](dropped).float().square().mean()
    loss.backward()
    assert hidden.dtype == dropped.dtype == torch.bfloat16
    kept = dropped != 0
    assert torch.equal(dropped[kept], hidden[kept] * 1.25)
    assert abs((~kept & (hidden != 0)).float().sum().item() / (hidden != 0).sum().item() - 0.2) < 0.01
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), (2, 3, 4, 5, 6), (0, 4)])
def test_any_shape_and_layout(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape) + 0.5
    out = apply(0.5, x)
    assert out.shape == x.shape
    assert torch.all((out == 0) | (out == x * 2))
    sliced = (torch.rand(8, 6, 10) + 0.5)[:, ::2]  # not dense: the mask falls back to row-major
    out = apply(0.5, sliced)
    assert torch.all((out == 0) | (out == sliced * 2)) and (out == 0).any()


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_p_raises(p: float) -> None:
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        Dropout(p)


def test_it_is_an_nn_dropout() -> None:
    module = Dropout(0.3)
    assert isinstance(module, nn.Dropout) and type(module).__name__ == "Dropout"
    assert module.p == 0.3 and "p=0.3" in repr(module)
    assert not list(module.parameters()) and not list(module.buffers())


def test_inplace_falls_back_to_torch() -> None:
    x = activations()
    y = x.clone()
    torch.manual_seed(0)
    out = Dropout(0.2, inplace=True)(y)
    assert out is y and torch.all((y == 0) | (y == x * 1.25))


@pytest.mark.slow  # torch.compile's first call takes half a minute on 2 cores
def test_compiled_module_trains() -> None:
    # Under torch.compile it is F.dropout, which inductor compiles with its own random numbers.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), Dropout(0.5), nn.Linear(32, 2))
    compiled = torch.compile(net)
    torch.manual_seed(1)
    first = compiled(torch.ones(8, 16))
    first.sum().backward()
    torch.manual_seed(1)
    assert torch.equal(compiled(torch.ones(8, 16)), first)
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("model", MODELS)
def test_backbones_use_it_and_keep_their_parameter_counts(model: str) -> None:
    config = shipped(model, "none")[0]
    net = build_backbone(config, {"name": "dropout", "rate": 0.2})
    layers = [m for m in net if isinstance(m, nn.Dropout)]
    assert layers and all(type(m) is Dropout and m.p == 0.2 for m in layers)
    assert len(layers) == {"softmax": 1, "mlp": 2, "cnn": 3}[model]
    assert parameter_count(net) == parameter_count(build_backbone(config, {"name": "none"}))
