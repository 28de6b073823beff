"""The hand-written gradients against torch.autograd and finite differences, and `python q1.py`."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from mnist_study.manual_backprop import autograd_reference, closed_form, graph
from mnist_study.manual_backprop.descent import Settings, descend, initial_values

from .conftest import ROOT, run_script

ENGINES = {"closed_form": closed_form.loss_and_gradients, "graph": graph.loss_and_gradients}
CASES = [(k, combine, n) for k in (1, 2, 3, 7) for combine in ("mul", "add") for n in (1, 5)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("k", "combine", "n_samples"), CASES)
def test_gradients_match_autograd(engine: str, k: int, combine: str, n_samples: int) -> None:
    a, b, c, x = initial_values(Settings(k=k, n_samples=n_samples, init="normal", seed=k))
    loss, grads = ENGINES[engine](a, b, c, x, combine)
    ref_loss, ref_grads = autograd_reference.loss_and_gradients(a, b, c, x, combine)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.shape == r.shape == (k, k)
        assert np.max(np.abs(g - r)) <= 1e-10 * np.max(np.abs(r))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("k", "combine", "n_samples"), CASES)
def test_gradients_match_central_finite_differences(engine: str, k: int, combine: str, n_samples: int) -> None:
    params = list(initial_values(Settings(k=k, n_samples=n_samples, init="normal", seed=100 + k)))
    x = params.pop()
    _, grads = ENGINES[engine](*params, x, combine)
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


@pytest.mark.parametrize("engine", ENGINES)
def test_gradient_descent_follows_autograd_at_every_step(engine: str) -> None:
    history = descend(Settings(k=4, epochs=40, lr=0.01, n_samples=3, engine=engine))
    assert max(history.max_rel_grad_error) <= 1e-10
    assert max(history.max_abs_param_diff) <= 1e-12
    np.testing.assert_allclose(history.loss_manual, history.loss_autograd, rtol=1e-10)
    assert history.loss_manual[-1] < 0.5 * history.loss_manual[0]


def test_saturated_sigmoid_stays_finite_without_warnings() -> None:
    k = 3
    a = np.full((k, k), 50.0 / k)  # y = Ax = +50 ...
    a[1] *= -1  # ... and -50
    b, c, x = np.eye(k), np.ones((k, k)), np.ones((k, 1))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for engine in ENGINES.values():
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


def test_q1_sweep_writes_tensorboard_logs_and_the_figure(tmp_path: Path) -> None:
    result = run_script("q1.py", "k=2,3", "epochs=5", f"hydra.sweep.dir={tmp_path}", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "A (manual)" in result.stdout and "A (autograd)" in result.stdout
    assert (tmp_path / "loss_vs_epoch.png").stat().st_size > 10_000
    for k in (2, 3):
        job = tmp_path / f"epochs=5,k={k}"  # named by the job's overrides
        for run in ("manual", "autograd"):
            assert list((job / run).glob("events.out.tfevents.*"))
        assert list(job.glob("events.out.tfevents.*"))  # the diff/* charts


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("k=0", "k must be an integer >= 1, got 0"),
        ("k=2.5", "k must be an integer >= 1, got 2.5"),
        ("lr=0", "lr must be a number > 0, got 0"),
        ("epochs=0", "epochs must be an integer >= 1, got 0"),
    ],
)
def test_q1_bad_input_is_one_line_and_a_failing_exit(tmp_path: Path, override: str, message: str) -> None:
    result = run_script("q1.py", override, f"hydra.sweep.dir={tmp_path}", cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output and "Traceback" not in output


def test_speed_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_study.manual_backprop import speed

    speed.main(["--k", "8", "--n-samples", "4", "--repeats", "1"])
    printed = capsys.readouterr().out
    assert printed.count("x autograd") == 2 and "matrix products alone" in printed
