"""The study report from real (synthetic-data) sweeps: tables, CSV, figures, failed and missing runs."""

import csv
import shutil
from pathlib import Path

import pytest

from mnist_study.report import write_report

from .conftest import ROOT, data_overrides, run_script

FIGURES = ["model_softmax.png", "model_mlp.png", "regularizer_none.png", "regularizer_bn.png", "grid_acc.png"]


@pytest.fixture(scope="module")
def sweep(synthetic_mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_script(
        "train.py", "-m", *data_overrides(*synthetic_mnist), "model=softmax,mlp", "regularizer=none,bn",
        "trainer.max_epochs=2", f"hydra.sweep.dir={sweep_dir}", cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return sweep_dir


def test_a_sweep_ends_with_its_report(sweep: Path) -> None:
    report = (sweep / "report.md").read_text()
    for model, reg in [("softmax", "none"), ("softmax", "bn"), ("mlp", "none"), ("mlp", "bn")]:
        assert f"| {model} | {reg} |" in report
    assert "4 of 4 runs complete" in report
    assert "best regularizer" in report and "one seed, so no spread" in report and "Batch norm changes mlp" in report
    for name in FIGURES:
        assert (sweep / name).stat().st_size > 5_000
        assert f"]({name})" in report

    with open(sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2  # one row per run and epoch
    assert {row["model"] for row in rows} == {"softmax", "mlp"}
    assert all(0 <= float(row["val/acc"]) <= 1 for row in rows)


def test_report_lists_missing_and_failed_runs_and_reports_the_rest(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    runs = sorted(p for p in copy.iterdir() if (p / ".hydra").is_dir())
    for events in runs[0].glob("events.out.tfevents.*"):
        events.unlink()  # killed before it logged anything
    (runs[1] / "failed.txt").write_text("DivergenceError: the training loss became non-finite\n")

    write_report(copy)

    report = (copy / "report.md").read_text()
    assert "2 of 4 runs complete" in report
    assert f"`{runs[0].name}`: incomplete: 0 of 2 epochs logged" in report
    assert f"`{runs[1].name}`: failed: DivergenceError" in report


def test_a_failing_job_does_not_stop_the_sweep(synthetic_mnist, tmp_path: Path) -> None:
    result = run_script(
        "train.py", "-m", "model=softmax", "regularizer=none,dropout", "++regularizer.rate=1.5",
        f"hydra.sweep.dir={tmp_path}", *data_overrides(*synthetic_mnist), cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: 1 of 2 runs have no result" in result.stderr
    report = (tmp_path / "report.md").read_text()
    assert "1 of 2 runs complete" in report
    assert "regularizer.rate must be in [0, 1), got 1.5" in report


def test_report_cli_needs_a_sweep(tmp_path: Path) -> None:
    result = run_script("report.py", str(tmp_path), cwd=ROOT)
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: no runs in {tmp_path}: give the directory of a `python train.py -m ...` sweep"
    )
