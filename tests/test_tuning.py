"""The learning-rate choice of a tuning sweep, on run folders written by hand: the best mean validation
accuracy wins, a tie goes to the smaller rate, the test set is never read."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_study.errors import UserError
from mnist_study.reporting.callbacks import TuningReport
from mnist_study.reporting.tuning import choose, plain_number, write_tuning_report

from .conftest import CONF, ROOT, run_script

TUNED = {"softmax": 0.002, "mlp": 0.001, "cnn": 0.002}  # what the hand-written runs say they ran with


def write_run(
    sweep: Path,
    model: str,
    lr: float,
    seed: int,
    val_acc: float | None,
    *,
    test_acc: object = 0.5,
    lr_in: str = "result",
    regularizer: str = "none",
) -> Path:
    """A run folder as train.py leaves it; `lr_in` says where its rate is written: result (result.json, and
    the override), overrides (.hydra/overrides.yaml only) or config (the resolved .hydra/config.yaml only).
    val_acc None: not finished."""
    run = sweep / f"model={model},optimizer.lr={lr},regularizer={regularizer},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {
        "model": {"name": model},
        "regularizer": {"name": regularizer},
        "optimizer": {"name": "adam", "lr": lr if lr_in == "config" else "${tuned_lr.${model.name}}"},
        "scheduler": {"name": "onecycle"},
        "trainer": {"max_epochs": 30},
        "seed": seed,
        "tuned_lr": TUNED,
    }
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    overrides = [f"model={model}", f"regularizer={regularizer}", f"seed={seed}", "experiment=tune"]
    if lr_in != "config":
        overrides.append(f"optimizer.lr={lr}")
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    if val_acc is not None:
        result = {"test/acc": test_acc, "test/loss": 0.1, "best_val/acc": val_acc, "model": model}
        result |= {"regularizer": regularizer, "seed": seed, "epochs": 30, "parameters": 7850}
        if lr_in == "result":
            result["lr"] = lr
        (run / "result.json").write_text(json.dumps(result))
    return run


def tuned_block(text: str) -> dict[str, float]:
    block = text.split("```yaml\n")[1].split("```")[0]
    return OmegaConf.to_container(OmegaConf.create(block))["tuned_lr"]  # type: ignore[index, return-value]


def test_the_best_mean_wins_not_the_best_single_run(tmp_path: Path) -> None:
    for seed, acc in enumerate((0.9860, 0.9800)):  # the best single run, a worse mean (98.30)
        write_run(tmp_path, "mlp", 0.004, seed, acc)
    for seed, acc in enumerate((0.9840, 0.9836)):  # mean 98.38
        write_run(tmp_path, "mlp", 0.001, seed, acc)
    for seed, acc in enumerate((0.9820, 0.9830)):
        write_run(tmp_path, "mlp", 0.0005, seed, acc)

    path, block = write_tuning_report(tmp_path, tmp_path / "out")

    text = path.read_text()
    assert path == tmp_path / "out" / "tune.md"
    assert "| **0.001** | **98.40** | **98.36** | **98.38** |" in text
    assert "| 0.004 | 98.60 | 98.00 | 98.30 |" in text
    assert "Choice: **0.001**, mean best validation accuracy 98.38 % over 2 seeds." in text
    assert block == [
        "tuned_lr:",
        "  softmax: 0.002  # not tuned in this sweep",
        "  mlp: 0.001",
        "  cnn: 0.002  # not tuned in this sweep",
    ]
    assert tuned_block(text) == {"softmax": 0.002, "mlp": 0.001, "cnn": 0.002}  # YAML that OmegaConf reads
    assert "use their model's rate" in text


def test_a_tie_goes_to_the_smaller_rate(tmp_path: Path) -> None:
    for lr in (0.004, 0.002, 0.001):  # written largest first: the order of the folders does not matter
        write_run(tmp_path, "cnn", lr, 0, 0.9930 if lr == 0.001 else 0.9935)
        write_run(tmp_path, "cnn", lr, 1, 0.9935 if lr == 0.001 else 0.9930)

    path, block = write_tuning_report(tmp_path)

    assert "Choice: **0.001**" in path.read_text()
    assert "  cnn: 0.001  # was 0.002" in block
    assert choose({0.002: {0: 0.99}, 0.001: {0: 0.99 + 1e-9}, 0.004: {0: 0.99}}) == 0.001  # float noise ties
    assert choose({0.002: {0: 0.99}, 0.001: {0: 0.9899}}) == 0.002
    assert choose({0.002: {}}) is None


def test_the_test_set_is_never_read(tmp_path: Path) -> None:
    # The test metrics would pick 0.002 (a damaged result.json, with a test/acc that is no number, is a job that
    # has not finished: runs.folders.read_result).
    for seed in (0, 1):
        write_run(tmp_path, "softmax", 0.001, seed, 0.9280, test_acc=0.1234 + seed / 1e4)
        write_run(tmp_path, "softmax", 0.002, seed, 0.9270, test_acc=0.9999)

    path, block = write_tuning_report(tmp_path)

    text = path.read_text()
    assert "  softmax: 0.001  # was 0.002" in block
    assert "99.99" not in text and "0.9999" not in text and "12.3" not in text and "0.123" not in text


def test_the_rate_comes_from_result_json_or_the_overrides_or_the_config(tmp_path: Path) -> None:
    write_run(tmp_path, "softmax", 0.001, 0, 0.9270, lr_in="result")
    write_run(tmp_path, "softmax", 0.002, 0, 0.9275, lr_in="overrides")
    write_run(tmp_path, "softmax", 0.004, 0, 0.9280, lr_in="config")

    text = write_tuning_report(tmp_path)[0].read_text()

    assert "| 0.001 | 92.70 | 92.70 |" in text and "| 0.002 | 92.75 | 92.75 |" in text
    assert "| **0.004** | **92.80** | **92.80** |" in text
    assert "It is the largest rate tried: the best may lie beyond it" in text


def test_a_partial_sweep_says_so_and_lists_what_is_missing(tmp_path: Path) -> None:
    write_run(tmp_path, "cnn", 0.001, 0, 0.9920)
    write_run(tmp_path, "cnn", 0.001, 1, None)  # still training
    failed = write_run(tmp_path, "cnn", 0.002, 0, None)
    (failed / "failed.txt").write_text("DivergenceError: the training loss became non-finite\n")
    write_run(tmp_path, "mlp", 0.001, 0, None)

    text = write_tuning_report(tmp_path)[0].read_text()

    assert "1 of 4 runs finished" in text and "**⚠ partial: 3 of 4 runs have no result yet" in text
    assert "| **0.001** | **99.20** | **—** | **99.20 (1 of 2 seeds)** |" in text and "| 0.002 | — | — | — |" in text
    assert "No result yet at 0.002: the choice is among the other rates." in text
    assert "## mlp\n\nNo finished run (rates tried: 0.001): no choice." in text
    assert f"- `{failed.name}`: failed: DivergenceError" in text
    assert "  mlp: 0.001  # not tuned in this sweep" in text


def test_regularized_variants_tuned_too_get_their_own_table(tmp_path: Path) -> None:
    for reg, best in (("none", 0.001), ("dropout", 0.002)):
        for lr in (0.001, 0.002):
            write_run(tmp_path, "mlp", lr, 0, 0.985 if lr == best else 0.984, regularizer=reg)

    path, block = write_tuning_report(tmp_path)

    text = path.read_text()
    assert "## mlp\n" in text and "## mlp + dropout\n" in text
    assert "  mlp: 0.001" in block  # conf/train.yaml has one rate per model: the one without a regularizer
    assert "the block below takes the one chosen with `none`" in text


def test_no_run_or_no_result_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no runs in"):
        write_tuning_report(tmp_path)
    write_run(tmp_path, "mlp", 0.001, 0, None)
    with pytest.raises(UserError, match=r"no run in .* has a result yet"):
        write_tuning_report(tmp_path)
    result = run_script("-m", "mnist_study.reporting.tuning", str(tmp_path), cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no run in {tmp_path} has a result yet: nothing to choose from"


def test_the_cli_writes_tune_md_and_prints_the_block(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep", "softmax", 0.0005, 0, 0.93)
    result = run_script("-m", "mnist_study.reporting.tuning", str(tmp_path / "sweep"), str(tmp_path / "out"), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"tuning: {tmp_path / 'out' / 'tune.md'}",
        "tuned_lr:",
        "  softmax: 0.0005  # was 0.002",
        "  mlp: 0.001  # not tuned in this sweep",
        "  cnn: 0.002  # not tuned in this sweep",
    ]


def test_experiment_tune_writes_tune_md_when_the_sweep_ends(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tune"], return_hydra_config=True)
    assert cfg.hydra.callbacks.tuning._target_ == "mnist_study.reporting.callbacks.TuningReport"

    write_run(tmp_path, "mlp", 0.001, 0, 0.98)
    TuningReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "Choice: **0.001**" in (tmp_path / "tune.md").read_text()


def test_rates_are_written_as_plain_decimals() -> None:
    assert [plain_number(x) for x in (0.0005, 0.001, 2e-3, 1e-5, 1.0, 0.1 + 0.2)] == [
        "0.0005", "0.001", "0.002", "0.00001", "1", "0.30000000000000004",
    ]  # fmt: skip
