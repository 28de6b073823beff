"""The study report from real (synthetic-data) sweeps: tables, CSV, figures, failed and missing runs."""

import csv
import json
import shutil
from pathlib import Path

from mnist_study.report import Run, findings, write_report

from .conftest import ROOT, data_overrides, run_script

FIGURES = ["model_softmax.png", "model_mlp.png", "regularizer_none.png", "regularizer_bn.png", "grid_acc.png"]


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
    for written in [*runs[0].glob("events.out.tfevents.*"), runs[0] / "result.json"]:
        written.unlink()  # killed before it logged anything
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


def test_every_run_is_reported_from_what_it_wrote_whatever_the_sweep_varied(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    source = next(copy.glob("*model=softmax,regularizer=none*"))
    # A model the study does not know and a second optimizer: each is its own row, not a seed of another.
    for name, edit in (("lenet", {"model": "lenet"}), ("sgd", {})):
        run = copy / f"extra-{name}"
        shutil.copytree(source, run)
        result = {**json.loads((run / "result.json").read_text()), **edit}
        (run / "result.json").write_text(json.dumps(result))
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        (run / ".hydra" / "overrides.yaml").write_text(overrides + ("- optimizer=sgd\n" if name == "sgd" else ""))

    runs = write_report(copy)

    report = (copy / "report.md").read_text()
    assert "6 of 6 runs complete" in report
    assert "| lenet | none |" in report
    assert "| softmax (optimizer=sgd) | none |" in report
    assert sum(r.label == "softmax" and r.regularizer == "none" for r in runs) == 1  # the sgd copy is not a seed


def run_of(model: str, regularizer: str, seed: int, acc: float) -> Run:
    return Run(f"{model}-{regularizer}-{seed}", model, regularizer, seed, test_acc=acc, test_loss=0.1)


def test_findings_compare_with_the_seed_spread_when_there_are_seeds() -> None:
    runs = [run_of("mlp", "none", s, a) for s, a in enumerate((0.9850, 0.9852, 0.9849))]
    runs += [run_of("mlp", "dropout", s, a) for s, a in enumerate((0.9866, 0.9864, 0.9867))]  # clearly better
    runs += [run_of("mlp", "bn", s, a) for s, a in enumerate((0.9840, 0.9870, 0.9855))]  # noisy: within spread
    [sentence] = [f for f in findings(runs) if f.startswith("**mlp**")]
    assert "best regularizer `dropout`" in sentence
    assert "points over none (larger than the seed-to-seed spread)" in sentence
    assert "points over bn (within the seed-to-seed spread)" in sentence
