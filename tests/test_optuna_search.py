"""hparams_search=optuna: a persistent, seeded Optuna search on validation accuracy that survives failed trials,
continues when re-run on its folder and ends with a summary."""

import json
import shlex
from pathlib import Path

import pytest

from mnist_study.config import command_line
from mnist_study.config.command_line import check_command_line
from mnist_study.errors import UserError
from mnist_study.runs.objective import sweeper_value
from mnist_study.runs.signals import stop_guard

from .conftest import CONF, ROOT, data_overrides, run_script

SEARCHED = ("optimizer.lr", "optimizer.weight_decay", "regularizer.rate")  # data.batch_size is fixed by the tests


def test_a_tiny_search_ends_with_its_summary_and_a_rerun_continues_it(synthetic_mnist, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[optuna]'")
    pytest.importorskip("sklearn", reason="needs pip install -e '.[optuna]'")
    import optuna

    search = ["train.py", "-m", "hparams_search=optuna", "model=softmax", *data_overrides(*synthetic_mnist)]
    search.append(f"hydra.sweep.dir={tmp_path}")
    first = run_script(*search, "hydra.sweeper.n_trials=2", cwd=ROOT)
    assert first.returncode == 0, first.stderr

    study = optuna.load_study(study_name="softmax-dropout", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.params.keys() == set(SEARCHED) for t in study.trials)
    best = study.best_trial
    results = [json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")]
    assert sorted(t.value for t in study.trials) == sorted(r["best_val/acc"] for r in results)  # validation only

    summary = (tmp_path / "optuna.md").read_text()
    assert "- **Trials**: 2 (2 complete)" in summary
    assert f"Trial {best.number}: best_val/acc = {best.value:.4f}" in summary
    command = summary.split("To train it again on its own:")[1].split("```")[1].strip()
    words = shlex.split(command)
    assert words[:4] == ["python", "train.py", "model=softmax", "regularizer=dropout"]
    assert all(f"{name}={value}" in words for name, value in best.params.items())
    assert "hparams_search=optuna" not in words and check_command_line(words[2:], CONF) == 1  # a valid single run
    importance = summary.split("## Importance of each parameter")[1].split("##")[0]
    assert all(f"| {name} | " in importance for name in SEARCHED)
    assert (tmp_path / "optuna_history.png").stat().st_size > 5_000
    assert (tmp_path / "optuna_parameters.png").stat().st_size > 5_000
    assert "continue this search: python train.py -m hparams_search=optuna" in first.stdout

    # The same folder again: the study goes on. This trial's rate is no float32: it fails, and the search with it.
    again = run_script(*search, "hydra.sweeper.n_trials=1", "optimizer.lr=1e300", cwd=ROOT)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="softmax-dropout", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.best_trial.number == best.number
    summary = (tmp_path / "optuna.md").read_text()
    assert "- **Trials**: 3 (2 complete, 1 failed)" in summary
    failed_row = next(line for line in summary.splitlines() if line.startswith("| 2 | failed |"))
    assert "the run diverged" in failed_row  # why: the first line of the run's failed.txt
    assert not (tmp_path / "report.md").exists()  # a search is summed up by optuna.md


def test_a_search_optimizes_validation_numbers_only() -> None:
    with pytest.raises(UserError) as raised:
        check_command_line(["optimized_metric=test/acc"], CONF)
    assert str(raised.value) == "optimized_metric must be best_val/acc or null, got 'test/acc'"


def test_a_search_checks_each_searched_value_before_it_starts() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[optuna]'")
    # 1 + one job per other value: the interval ends of lr, weight decay and rate, and 3 more batch sizes
    assert check_command_line(["hparams_search=optuna"], CONF) == 1 + 3 + 3
    with pytest.raises(UserError) as raised:
        check_command_line(["hparams_search=optuna", "data.batch_size=choice(0,32)"], CONF)
    assert str(raised.value) == "data.batch_size must be a positive integer, got 0"
    with pytest.raises(UserError) as raised:
        check_command_line(["hparams_search=optuna", "regularizer=bn"], CONF)
    assert str(raised.value).startswith("regularizer.rate is not an option of regularizer=bn")


def test_a_search_without_its_packages_says_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_line, "installed", lambda module: module != "hydra_plugins.hydra_optuna_sweeper")
    with pytest.raises(UserError) as raised:
        check_command_line(["hparams_search=optuna"], CONF)
    message = "hparams_search=optuna needs the hydra-optuna-sweeper package: pip install -e '.[optuna]'"
    assert str(raised.value) == message


def test_the_sweeper_gets_the_validation_number_or_none_for_a_failed_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    result = {"best_val/acc": 0.97, "test/acc": 0.99}
    assert sweeper_value(result, None) is result  # not a search: the result as it is
    assert sweeper_value(result, "best_val/acc") == 0.97
    assert sweeper_value(None, "best_val/acc") is None  # a failed run: a failed trial, and the search goes on
    assert sweeper_value({"test/acc": 0.99}, "best_val/acc") is None
    monkeypatch.setattr(stop_guard(), "signum", 2)  # Ctrl-C came: the search stops, not every later trial failing
    with pytest.raises(SystemExit) as stopped:
        sweeper_value(None, "best_val/acc")
    assert stopped.value.code == 130
