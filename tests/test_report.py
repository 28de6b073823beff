"""The study report from real (synthetic-data) sweeps: what ran, tables, CSVs, figures, failed and missing
runs; and its numbers on small synthetic cases."""

import csv
import json
import math
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_study.reporting.figures import summed_confusion
from mnist_study.reporting.report import findings, not_the_full_study, results_table, what_ran, write_report
from mnist_study.reporting.stats import welch
from mnist_study.reporting.sweep import Run

from .conftest import ROOT, data_overrides, run_script
from .helpers.runs import run_of

OLD_RESULT_KEYS = ("test/acc", "test/loss", "best_val/acc", "model", "regularizer", "seed", "epochs", "parameters")
FIGURES = ["model_softmax.png", "model_mlp.png", "regularizer_none.png", "regularizer_bn.png", "grid_acc.png"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_sweep_ends_with_its_report(sweep: Path) -> None:
    report = (sweep / "report.md").read_text()
    for model, reg in [("softmax", "none"), ("softmax", "bn"), ("mlp", "none"), ("mlp", "bn")]:
        assert f"| {model} | {reg} |" in report
    assert "4 of 4 runs complete" in report
    assert "**softmax**: `bn` against `none`: one seed: no test possible" in report
    assert "| mlp | bn | " in report.split("## Regularizers against `none`")[1]
    assert "epoch time:" not in report and "Batch norm changes" not in report  # one seed: no time difference stated
    for name in FIGURES:
        assert (sweep / name).stat().st_size > 5_000
        assert f"]({name})" in report

    results = read_csv(sweep / "results.csv")
    assert len(results) == 4  # one row per run
    assert {(row["model"], row["regularizer"]) for row in results} == {
        ("softmax", "none"),
        ("softmax", "bn"),
        ("mlp", "none"),
        ("mlp", "bn"),
    }
    for row in results:
        written = json.loads((sweep / row["run"] / "result.json").read_text())
        assert float(row["test_acc"]) == written["test/acc"] and row["epochs"] == "2" and row["seed"] == "0"
        assert float(row["best_val_acc"]) == written["best_val/acc"] and row["best_val_epoch"] in ("1", "2")
        assert float(row["lr"]) == written["lr"] and float(row["seconds"]) == written["seconds"]
    curves = read_csv(sweep / "curves.csv")
    assert len(curves) == 4 * 2  # one row per run and epoch
    assert sorted({row["epoch"] for row in curves}) == ["1", "2"]  # counted from 1, as everywhere
    assert {row["model"] for row in curves} == {"softmax", "mlp"}
    for row in results:  # the curves are the runs' own: the best epoch's validation accuracy is the checkpoint's
        val_acc = {int(c["epoch"]): float(c["val/acc"]) for c in curves if c["run"] == row["run"]}
        assert val_acc[int(row["best_val_epoch"])] == pytest.approx(float(row["best_val_acc"])) == max(val_acc.values())


def test_the_report_says_what_ran_and_what_is_missing_of_the_study(sweep: Path) -> None:
    header = (sweep / "report.md").read_text().split("## Results")[0]
    results = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    assert "- **Seeds**: 0; **epochs**: 2" in header
    assert (
        "**⚠ not the full study: 4 of 9 networks (missing: softmax + dropout, mlp + dropout, cnn + none, "
        "cnn + dropout, cnn + bn); 2 epochs instead of 30; 1 seed, so differences cannot be tested.**"
    ) in header
    first = next(r for r in results if r["model"] == "softmax")
    assert f"**Optimizer**: {first['optimizer']}; peak learning rate: softmax {first['lr']:g}; mlp " in header
    assert f"**schedule**: {first['scheduler']}; **batch size**: {first['batch_size']}" in header
    assert f"**Device**: {first['device']} ({first['device_name']}); **precision**: {first['precision']}" in header
    assert f"torch {first['torch']}, lightning {first['lightning']}" in header
    start = min(datetime.fromisoformat(r["started"]) for r in results)
    assert f"- **Date**: {start.date().isoformat()} (UTC); **wall time of the sweep**: " in header
    assert "from file times" not in header


def test_confusion_matrices_and_mistakes_are_in_the_report(sweep: Path) -> None:
    report = (sweep / "report.md").read_text()
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}
    assert (sweep / "confusion_matrices.png").stat().st_size > 5_000
    assert "![confusion_matrices.png](confusion_matrices.png)" in report
    assert "| model | regularizer | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |" in report
    study_order = [("softmax", "none"), ("softmax", "bn"), ("mlp", "none"), ("mlp", "bn")]
    accs = {(r["model"], r["regularizer"]): r["test/acc"] for r in results.values()}  # one seed each
    model, reg = max(study_order, key=lambda net: accs[net])  # ties: the first in the study's order
    copied = sweep / f"misclassified_{model}-{reg}.png"
    [source] = [
        sweep / n / "misclassified.png" for n, r in results.items() if (r["model"], r["regularizer"]) == (model, reg)
    ]
    assert copied.read_bytes() == source.read_bytes()
    assert f"![{copied.name}]({copied.name})" in report


def test_exploded_runs_are_flagged(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    result_file = next(copy.glob("mlp-bn*/result.json"))
    result_file.write_text(json.dumps({**json.loads(result_file.read_text()), "exploded": True}))

    write_report(copy)

    report = (copy / "report.md").read_text()
    section = report.split("## ⚠ Runs whose loss exploded")[1].split("## Results")[0]
    assert f"- `{result_file.parent.name}`" in section and section.count("- `") == 1
    assert [row["exploded"] for row in read_csv(copy / "results.csv")].count("True") == 1


def test_report_lists_missing_and_failed_runs_and_reports_the_rest(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    runs = sorted(p for p in copy.iterdir() if (p / ".hydra").is_dir())
    for written in [*runs[0].glob("events.out.tfevents.*"), runs[0] / "epochs.csv", runs[0] / "result.json"]:
        written.unlink()  # killed before it logged anything
    (runs[1] / "failed.txt").write_text("DivergenceError: the training loss became non-finite\n")
    (runs[2] / "failed.rank1.txt").write_text("RuntimeError: rank 1 lost its peer\n")  # only another DDP rank failed

    write_report(copy)

    report = (copy / "report.md").read_text()
    assert "1 of 4 runs complete" in report
    assert f"`{runs[0].name}`: incomplete: 0 of 2 epochs logged" in report
    assert f"`{runs[1].name}`: failed: DivergenceError" in report
    assert f"`{runs[2].name}`: failed: RuntimeError: rank 1 lost its peer" in report


def test_a_failing_job_does_not_stop_the_sweep(synthetic_mnist, tmp_path: Path) -> None:
    # A bad value is refused before any job (mnist_study.config.schema); a rate this large is a valid float but
    # not a float32, so that job fails once it starts.
    result = run_script(
        "train.py", "-m", "model=softmax", "optimizer.lr=0.002,1e300",
        f"hydra.sweep.dir={tmp_path}", *data_overrides(*synthetic_mnist), cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: 1 of 2 runs have no result" in result.stderr
    report = (tmp_path / "report.md").read_text()
    assert "1 of 2 runs complete" in report
    assert (
        "optimizer.lr=1e+300,trainer.accelerator=cpu,trainer.max_epochs=1,trainer.precision=32-true`: failed:"
        in (report.split("## Runs without a result")[1])
    )
    rows = read_csv(tmp_path / "results.csv")
    assert [bool(row["error"]) for row in sorted(rows, key=lambda row: float(row["lr"]))] == [False, True]


def test_report_cli_needs_a_sweep(tmp_path: Path) -> None:
    result = run_script("report.py", str(tmp_path), cwd=ROOT)
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: no runs in {tmp_path}: give the directory of a `python train.py -m ...` sweep"
    )


def test_every_run_is_reported_from_what_it_wrote_whatever_the_sweep_varied(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    source = next(copy.glob("softmax-none*"))
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


def test_findings_test_each_regularizer_against_none_over_the_seeds() -> None:
    runs = [run_of("mlp", "none", s, a) for s, a in enumerate((0.9850, 0.9852, 0.9849))]
    runs += [run_of("mlp", "dropout", s, a) for s, a in enumerate((0.9866, 0.9864, 0.9867))]  # clearly better
    runs += [run_of("mlp", "bn", s, a) for s, a in enumerate((0.9840, 0.9870, 0.9855))]  # noisy
    runs += [run_of("softmax", "none", s, a) for s, a in enumerate((0.9270, 0.9271, 0.9269))]
    runs += [run_of("softmax", "bn", s, a) for s, a in enumerate((0.9216, 0.9205, 0.9210))]  # clearly worse
    [mlp] = [f for f in findings(runs) if f.startswith("**mlp**")]
    [softmax] = [f for f in findings(runs) if f.startswith("**softmax**")]

    dropout = welch([98.66, 98.64, 98.67], [98.50, 98.52, 98.49])
    assert (
        f"`dropout` helps (+0.15 points, 95 % CI +{dropout.low:.2f} to +{dropout.high:.2f}, p < 0.001 against `none`)"
    ) in mlp
    assert "`bn` against `none`: no significant difference at 3 seeds (+0.05 points, 95 % CI -" in mlp
    assert dropout.p_value < 0.001
    assert "`bn` hurts (-0.60 points" in softmax
    assert "helps" not in softmax and "hurts" not in mlp


def test_an_epoch_time_difference_is_stated_only_with_its_interval_and_test() -> None:
    runs = []
    for reg, times in (("none", (3.1, 3.2, 3.3)), ("bn", (3.8, 3.9, 4.0)), ("dropout", (1.0, 6.0, 3.0))):
        for seed, seconds in enumerate(times):
            runs.append(run_of("mlp", reg, seed, 0.98))
            runs[-1].curves = {"train/epoch_s": [9.0, seconds]}  # the first epoch is left out of the mean
    [sentence] = [f for f in findings(runs) if "epoch time" in f]
    bn = welch([3.8, 3.9, 4.0], [3.1, 3.2, 3.3])
    assert sentence.startswith("**mlp**, epoch time: ")
    assert f"`bn` slower than `none` (+0.70 s or +22 % on 3.20 s, 95 % CI +{bn.low:.2f} to +{bn.high:.2f} s" in sentence
    assert "`dropout` against `none`: no significant difference at 3 seeds (+0.13 s or +4 % on 3.20 s" in sentence
    one_seed = [r for r in runs if r.seed == 0]
    assert not [f for f in findings(one_seed) if "epoch time" in f]  # a single timing per side says nothing


def test_findings_with_one_seed_test_nothing() -> None:
    runs = [run_of("cnn", "none", 0, 0.9933), run_of("cnn", "dropout", 0, 0.9946)]
    assert findings(runs)[0] == "**cnn**: `dropout` against `none`: one seed: no test possible (+0.13 points)."


def test_the_full_study_is_not_flagged_and_a_partial_one_says_what_it_lacks() -> None:
    full = [
        run_of(m, reg, s, 0.9) for m in ("softmax", "mlp", "cnn") for reg in ("none", "dropout", "bn") for s in (0, 1)
    ]
    assert not_the_full_study(full) == []
    partial = [r for r in full if not (r.model == "cnn" and r.seed == 1)] + [run_of("lenet", "none", 0, 0.9)]
    partial += [run_of("cnn", "bn", 2, 0.9, epochs=10)]
    assert not_the_full_study(partial) == [
        "10–30 epochs instead of 30",
        "1 seed for cnn + none, cnn + dropout, lenet + none",
    ]
    assert not_the_full_study([r for r in full if r.model != "cnn"]) == [
        "6 of 9 networks (missing: cnn + none, cnn + dropout, cnn + bn)"
    ]


def test_best_epoch_and_train_validation_gap_per_run() -> None:
    run = run_of("mlp", "none", 0, 0.98)
    run.curves = {"val/acc": [0.90, 0.97, 0.97, 0.96], "train/acc": [0.80, 0.95, 0.99, 1.0]}
    assert run.best_val_epoch == 2  # the first epoch at the best value, counted from 1
    assert run.last_gap == pytest.approx(0.04)
    assert run_of("mlp", "none", 0, 0.98).best_val_epoch is None
    assert math.isnan(run_of("mlp", "none", 0, 0.98).last_gap)


def test_confusion_matrices_are_summed_over_seeds_then_normalized_per_true_class() -> None:
    first, second = run_of("mlp", "none", 0, 0.9), run_of("mlp", "none", 1, 0.9)
    first.confusion_matrix = [[3 if i == j else 0 for j in range(10)] for i in range(10)]
    second.confusion_matrix = [[1 if j in (i, 0) else 0 for j in range(10)] for i in range(10)]
    rates = summed_confusion([first, second, run_of("mlp", "none", 2, 0.9)])  # the third recorded none
    assert rates is not None
    assert rates[0][0] == 1.0
    assert rates[5][5] == pytest.approx(4 / 5) and rates[5][0] == pytest.approx(1 / 5)
    assert all(sum(row) == pytest.approx(1) for row in rates)
    assert summed_confusion([run_of("mlp", "none", 0, 0.9)]) is None


def test_the_header_says_which_dropout_and_which_precision_each_network_used() -> None:
    run = Run("mlp-dropout", "mlp", "dropout", 0, test_acc=0.98, test_loss=0.05, parameters=10)
    run.settings = {"dropout_mask": "torch", "precision": "32-true"}
    run.config = OmegaConf.create({"regularizer": {"name": "dropout", "rate": 0.3}})
    assert "- **Dropout**: rate 0.3; nn.Dropout itself (regularizer.mask=torch)" in what_ran([run])
    header, _, row = results_table([run])
    assert header.split(" | ")[7] == "precision" and row.split(" | ")[7] == "32-true"


def test_short_runs_get_whole_epoch_ticks_from_1_and_show_their_first_epoch() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mnist_study.reporting.figures import _band, _epoch_axis, _zoom_accuracy

    runs = [run_of("mlp", "none", seed, 0.98, epochs=3) for seed in (0, 1)]
    for run, first in zip(runs, (0.80, 0.82), strict=True):
        run.curves = {"val/acc": [first, 0.95, 0.97]}
    fig, ax = plt.subplots()
    _band(ax, runs, "val/acc", "C0", "none")
    _zoom_accuracy(ax)
    _epoch_axis(ax)
    low, high = ax.get_xlim()
    assert [tick for tick in ax.get_xticks() if low <= tick <= high] == [1, 2, 3]  # no 0.5, 1.5 or epoch 0
    assert ax.get_ylim()[0] < 0.80 and ax.get_ylim()[1] > 0.97  # the first epoch, and its seeds' band, are shown
    plt.close(fig)
