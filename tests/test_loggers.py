"""Any Lightning logger (conf/logger/): each writes into the run's folder, the report reads the run's own
epochs.csv whatever the loggers, TensorBoard's views stay with TensorBoard, and a bad logger option is one line."""

import csv
import json
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_study.config import loggers
from mnist_study.config.command_line import check_command_line
from mnist_study.errors import UserError
from mnist_study.runs.artifacts import EPOCH_COLUMNS
from mnist_study.runs.epoch_rows import epoch_curves, read_epoch_rows
from mnist_study.training.pipeline import train

from .conftest import CONF

CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "train/epoch_s")


def runs_of(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def test_a_run_without_tensorboard_writes_its_epochs_file_and_skips_tensorboards_views(make_cfg, tmp_path) -> None:
    result = train(make_cfg("model=mlp", "trainer.max_epochs=2", "logger=csv"))

    run = tmp_path / "run"
    rows = read_epoch_rows(run / "epochs.csv")
    assert [row["epoch"] for row in rows] == [1, 2]  # counted from 1, as in the log
    assert all(set(EPOCH_COLUMNS) - {"test_epoch/acc", "test_epoch/loss"} <= row.keys() for row in rows)
    assert max(row["val/acc"] for row in rows) == pytest.approx(result["best_val/acc"])
    assert not list(run.glob("events.out.tfevents.*"))  # no TensorBoard, and no error from its views
    assert (run / "confusion_matrix.png").is_file() and len(result["per_class_acc"]) == 10
    with open(run / "csv" / "metrics.csv") as f:  # Lightning's CSVLogger, in the run's folder
        logged = list(csv.DictReader(f))
    assert [float(r["val/acc"]) for r in logged if r.get("val/acc")] == [row["val/acc"] for row in rows]


def test_with_many_loggers_tensorboard_keeps_its_views(make_cfg, tmp_path: Path) -> None:
    result = train(make_cfg("model=softmax", "logger=many"))

    run = tmp_path / "run"
    events = EventAccumulator(str(run))
    events.Reload()
    assert events.Scalars("val_best/test_acc")[0].value == pytest.approx(result["test/acc"])  # HParams' numbers
    plugins = events.PluginTagToContent
    assert plugins("hparams") and plugins("custom_scalars") and events.Tags()["images"]  # HPARAMS, layout, figures
    assert (run / "csv" / "metrics.csv").is_file() and (run / "epochs.csv").is_file()


def test_a_resumed_run_keeps_one_row_per_epoch(make_cfg, tmp_path: Path) -> None:
    config = ("model=softmax", "scheduler=none")
    train(make_cfg(*config, "trainer.max_epochs=2"))
    run = tmp_path / "run"
    before = read_epoch_rows(run / "epochs.csv")
    with open(run / "epochs.csv", "a") as f:  # rows of epochs a crash left unsaved: the resume trains them again
        f.write("3,0.5,0.5,0.123,0.5,,,1.0,1.0,0.001\n4,0.5,0.5,0.456,0.5,,,1.0,1.0,0.001\n")

    train(make_cfg(*config, "trainer.max_epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"))

    rows = read_epoch_rows(run / "epochs.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[:2] == before
    assert rows[2]["val/acc"] not in (0.123, 0.456)


def test_the_epochs_file_holds_what_tensorboard_logged(sweep: Path) -> None:
    for run in runs_of(sweep):
        events = EventAccumulator(str(run))
        events.Reload()
        curves = epoch_curves(run)
        for tag in CURVES:
            assert curves[tag] == pytest.approx([e.value for e in events.Scalars(tag)], rel=1e-7), (run.name, tag)


TIMING_COLUMNS = ("epoch time (s)", "train images/s")


def comparable(report: str) -> str:
    """report.md less what differs between two runs of the same sweep: its name, dates and times."""
    lines, drop = [], []
    for line in report.splitlines():
        if line.startswith(("# MNIST study", "- **Date**")) or "epoch time by" in line:
            continue
        cells = line.split(" | ")
        if line.startswith("| model | regularizer | test acc"):
            drop = [i for i, cell in enumerate(cells) if cell.strip(" |") in TIMING_COLUMNS]
        elif not line.startswith("|"):
            drop = []
        lines.append(" | ".join(c for i, c in enumerate(cells) if i not in drop))
    return "\n".join(lines)


def test_a_sweep_with_the_csv_logger_reports_the_same_numbers_as_with_tensorboard(sweep, csv_sweep) -> None:
    assert not list(csv_sweep.glob("**/events.out.tfevents.*"))
    assert [p.name for p in runs_of(csv_sweep)] == [p.name for p in runs_of(sweep)]  # logger= names no run
    tensorboard, csv_only = (sweep / "report.md").read_text(), (csv_sweep / "report.md").read_text()
    assert "| softmax | none | " in csv_only and "4 of 4 runs complete" in csv_only
    assert comparable(csv_only) == comparable(tensorboard)
    assert comparable(tensorboard) != comparable(tensorboard.replace("| 1 |", "| 2 |"))  # the comparison can fail
    for run in runs_of(sweep):
        tb, other = epoch_curves(run), epoch_curves(csv_sweep / run.name)
        assert all(tb[tag] == other[tag] for tag in ("train/acc", "train/loss", "val/acc", "val/loss"))


def test_an_mlflow_run_is_read_back_with_mlflows_own_client(make_cfg, tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="logger=mlflow needs pip install -e '.[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="logger=mlflow needs pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    result = train(make_cfg("model=mlp", "regularizer=dropout", "trainer.max_epochs=2", "logger=mlflow"))

    run = tmp_path / "run"
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "mnist_study"]
    [logged] = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"  # named after the run's folder
    params = logged.data.params
    assert params["model/name"] == "mlp" and params["regularizer/rate"] == "0.2" and params["seed"] == "0"
    assert float(params["optimizer/lr"]) == result["lr"]
    rows = read_epoch_rows(run / "epochs.csv")
    for tag in ("val/acc", "train/loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(logged.info.run_id, tag))
        assert history == [(1, pytest.approx(row[tag])) for row in rows[:1]] + [(2, pytest.approx(rows[1][tag]))]
    assert logged.data.metrics["test/acc"] == pytest.approx(result["test/acc"])
    assert not list(run.glob("events.out.tfevents.*")) and (run / "epochs.csv").is_file()


def test_wandb_offline_keeps_its_files_in_the_run_folder(make_cfg, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="logger=wandb needs pip install -e '.[wandb]'")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):  # wandb's own files, outside the run
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name))
    monkeypatch.setenv("WANDB_SILENT", "true")

    train(make_cfg("model=softmax", "logger=wandb"))

    [offline_run] = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("run-*.wandb"))  # what `wandb sync` would upload later
    assert (tmp_path / "run" / "epochs.csv").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["logger.tensorboard.flush_secs=abc"], "logger.tensorboard.flush_secs must be an integer, got 'abc'"),
        (["+logger.tensorboard.max_qeue=5"], "logger.tensorboard.max_qeue is not a TensorBoardRunLogger argument: did "
                                             "you mean logger.tensorboard.max_queue?"),
        (["logger=csv", "+logger.csv.save_dir=/elsewhere"], "logger.csv.save_dir is set by train.py itself"),
        (["logger=wandb", "logger.wandb.offline=maybe"], "logger.wandb.offline must be true or false, got 'maybe'"),
        (["+logger.flush_secs=10"], "logger.flush_secs must be {_target_: a Lightning logger, its arguments}, got 10"),
        (["+logger.mine={_target_:collections.OrderedDict}"], "logger.mine._target_=collections.OrderedDict is not "
                                                              "a Lightning logger"),
        (["+logger.mine={_target_:nowhere.Logger}"], "logger.mine._target_=nowhere.Logger is not a class that can "
                                                     "be imported"),
    ],
)  # fmt: skip
def test_a_bad_logger_option_is_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as raised:
        check_command_line(overrides, CONF)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["logger=many"],
        ["logger=[csv,tensorboard]"],
        ["+logger.tensorboard.max_queue=5"],  # a SummaryWriter argument, which TensorBoardLogger passes on
        ["logger.tensorboard=null", "~callbacks.learning_rate"],  # no logger at all
        ["logger=csv", "logger.csv.flush_logs_every_n_steps=10"],
    ],
)
def test_good_logger_options_pass(overrides: list[str]) -> None:
    assert check_command_line(overrides, CONF) == 1


@pytest.mark.parametrize(("logger", "module"), [("mlflow", "mlflow"), ("mlflow", "sqlalchemy"), ("wandb", "wandb")])
def test_a_logger_whose_package_is_missing_says_how_to_install_it(monkeypatch, logger: str, module: str) -> None:
    monkeypatch.setattr(loggers, "installed", lambda name: name != module)
    with pytest.raises(UserError) as raised:
        check_command_line([f"logger={logger}"], CONF)
    assert str(raised.value) == f"logger={logger} needs the {module} package: pip install -e '.[{logger}]'"


def test_a_run_with_no_logger_still_writes_its_epochs_and_result(make_cfg, tmp_path: Path) -> None:
    monitor = "+callbacks.lr_steps={_target_: lightning.pytorch.callbacks.LearningRateMonitor}"
    with pytest.raises(UserError) as raised:  # Lightning's per-step monitor, if added, needs a logger
        check_command_line(["logger.tensorboard=null", monitor], CONF)
    assert str(raised.value).startswith("callbacks.lr_steps (LearningRateMonitor) needs a logger and this run")
    check_command_line(["logger.tensorboard=null"], CONF)  # the run's own train/lr, once an epoch, needs none

    result = train(make_cfg("model=softmax", "logger.tensorboard=null"))
    run = tmp_path / "run"
    assert [row["epoch"] for row in read_epoch_rows(run / "epochs.csv")] == [1]
    assert json.loads((run / "result.json").read_text())["test/acc"] == result["test/acc"]
    assert not [p for p in run.iterdir() if re.match(r"events\.out|csv$|wandb$|mlflow", p.name)]
