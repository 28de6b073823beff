"""The hand-written gradients, on each array backend, against torch.autograd and finite differences."""

import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from mnist_study.errors import UserError
from mnist_study.manual_backprop import autograd_reference, closed_form, descent, graph
from mnist_study.manual_backprop.backends import Backend
from mnist_study.manual_backprop.descent import Settings, descend, estimated_bytes, initial_values

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
# (engine, backend, device): the graph engine is NumPy only
ENGINES = [
    pytest.param("closed_form", "numpy", "cpu", id="closed_form-numpy"),
    pytest.param("closed_form", "torch", "cpu", id="closed_form-torch-cpu"),
    pytest.param("closed_form", "torch", "cuda", id="closed_form-torch-cuda", marks=NO_CUDA),
    pytest.param("graph", "numpy", "cpu", id="graph-numpy"),
]
CASES = [(k, combine, n) for k in (1, 2, 3, 7) for combine in ("mul", "add") for n in (1, 5)]
Gradients = Callable[..., tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]]


def on_numpy_arrays(engine: str, backend_name: str, device: str) -> Gradients:
    """The engine on its backend's arrays, taking and returning NumPy arrays."""
    if engine == "graph":
        return graph.loss_and_gradients
    backend = Backend(backend_name, device)

    def gradients(
        a: np.ndarray, b: np.ndarray, c: np.ndarray, x: np.ndarray, combine: str = "mul"
    ) -> tuple[float, tuple[np.ndarray, ...]]:
        loss, grads = backend.loss_and_gradients(*(backend.asarray(p) for p in (a, b, c, x)), combine)
        return loss, tuple(backend.to_numpy(g) for g in grads)

    return gradients


@pytest.mark.parametrize(("engine", "backend", "device"), ENGINES)
@pytest.mark.parametrize(("k", "combine", "n_samples"), CASES)
def test_gradients_match_autograd(engine: str, backend: str, device: str, k: int, combine: str, n_samples: int) -> None:
    a, b, c, x = initial_values(Settings(k=k, n_samples=n_samples, init="normal", seed=k))
    loss, grads = on_numpy_arrays(engine, backend, device)(a, b, c, x, combine)
    ref_loss, ref_grads = autograd_reference.loss_and_gradients(a, b, c, x, combine)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.shape == r.shape == (k, k)
        assert np.max(np.abs(g - r)) <= 1e-10 * np.max(np.abs(r))


@pytest.mark.parametrize(("engine", "backend", "device"), ENGINES)
@pytest.mark.parametrize(("k", "combine", "n_samples"), CASES)
def test_gradients_match_central_finite_differences(
    engine: str, backend: str, device: str, k: int, combine: str, n_samples: int
) -> None:
    params = list(initial_values(Settings(k=k, n_samples=n_samples, init="normal", seed=100 + k)))
    x = params.pop()
    _, grads = on_numpy_arrays(engine, backend, device)(*params, x, combine)
    rng, h = np.random.default_rng(k), 1e-6
    for which in range(3):
        for _ in range(4):
            i, j = rng.integers(0, k, 2)
            shifted = [[p.copy() for p in params] for _ in range(2)]
            shifted[0][which][i, j] += h
            shifted[1][which][i, j] -= h
            plus, minus = (closed_form.forward(*p, x, combine).loss for p in shifted)
            numeric = (plus - minus) / (2 * h)
            assert abs(numeric - grads[which][i, j]) <= 1e-6 * max(1.0, abs(numeric))


def test_a_value_used_twice_gets_both_gradients() -> None:
    # x feeds y = Ax and v = Bx: the engine must add the two contributions.
    a, b, c, x = initial_values(Settings(k=3, n_samples=2, init="normal"))
    nodes = graph.build(a, b, c, x)
    nodes["L"].backward()
    dy = nodes["y"].grad
    dv = nodes["v"].grad
    np.testing.assert_allclose(nodes["x"].grad, a.T @ dy + b.T @ dv, rtol=1e-12)


@pytest.mark.parametrize(("engine", "backend", "device"), ENGINES)
def test_gradient_descent_follows_autograd_at_every_step(engine: str, backend: str, device: str) -> None:
    history = descend(Settings(k=4, epochs=40, lr=0.01, n_samples=3, engine=engine, backend=backend, device=device))
    assert history.device == device
    assert max(history.max_rel_grad_error) <= 1e-10
    assert max(history.max_abs_param_diff) <= 1e-12
    np.testing.assert_allclose(history.loss_manual, history.loss_autograd, rtol=1e-10)
    assert history.loss_manual[-1] < 0.5 * history.loss_manual[0]


def test_saturated_sigmoid_stays_finite_without_warnings() -> None:
    k = 3
    a = np.full((k, k), 50.0 / k)  # y = Ax = +50 ...
    a[1] *= -1  # ... and -50
    b, c, x = np.eye(k), np.ones((k, k)), np.ones((k, 1))
    engines = [on_numpy_arrays(*param.values) for param in ENGINES if not param.marks]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for engine in engines:
            loss, grads = engine(a * 10, b, c, x)  # |y| = 500 too
            loss, grads = engine(a, b, c, x)
            assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
    _, ref = autograd_reference.loss_and_gradients(a, b, c, x)
    np.testing.assert_allclose(grads[0], ref[0], rtol=1e-10, atol=1e-300)


def test_importing_the_engine_does_not_import_lightning() -> None:
    code = (
        "import sys, mnist_study.manual_backprop.app, mnist_study.manual_backprop.descent\n"
        "assert not any(m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning')) for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_backend_runs_the_closed_form_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the torch backend called torch.autograd")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    backend = Backend("torch", "cpu")
    arrays = [backend.asarray(p) for p in initial_values(Settings(k=3, n_samples=2))]
    loss, grads = backend.loss_and_gradients(*arrays)
    assert isinstance(loss, float)
    for g in grads:
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
        assert not g.requires_grad and g.grad_fn is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"engine": "graph", "backend": "torch"}, "backend must be numpy with engine=graph"),
        ({"backend": "numpy", "device": "cuda"}, "device must be cpu or auto with backend=numpy"),
        ({"backend": "torch", "device": "gpu"}, "device must be auto, cpu or cuda, got 'gpu'"),
    ],
)
def test_backend_options_that_cannot_run_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        Settings(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(UserError, match="device must be cpu or auto: torch sees no CUDA device here, got 'cuda'"):
        Settings(backend="torch", device="cuda")


def test_a_k_too_large_for_memory_is_refused_with_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = estimated_bytes(100, 1, "float64") - 1  # one byte short of K=100
    monkeypatch.setattr(descent, "memory_bytes", lambda device: memory)
    Settings(k=99)
    with pytest.raises(
        UserError, match=r"k must be at most about 99 with n_samples=1 and float64 .* got 100: it needs"
    ):
        Settings(k=100)
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"got 10000000: it needs about 1.2e\+07 GB"):
        Settings(k=10_000_000)  # 15 K^2 doubles: more than any machine this runs on
    with pytest.raises(UserError, match=r"^n_samples must be smaller for float64 on this cpu .*, got 100000000000000"):
        Settings(k=1, n_samples=10**14)


def test_memory_estimate_counts_matrices_and_columns_by_dtype() -> None:
    assert estimated_bytes(1024, 1024, "float64") == 8 * (15 + 24) * 1024 * 1024
    assert estimated_bytes(1024, 1, "float32") == 4 * (15 * 1024 * 1024 + 24 * 1024)


def test_speed_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import q1_backward as speed

    speed.main(["--k", "8", "--n-samples", "4", "--repeats", "1", "--device", "cpu"])
    printed = capsys.readouterr().out
    for name in ("closed form, numpy", "closed form, torch", "graph engine, numpy", "torch.autograd"):
        assert name in printed
    assert printed.count("x autograd") == 3 and "matrix products alone" in printed
    speed.main(["--k", "8", "--n-samples", "4", "--repeats", "1", "--backend", "torch", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "closed form, torch" in printed and "numpy" not in printed.split("matrix products")[0]
