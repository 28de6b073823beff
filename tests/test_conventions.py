"""The Lightning and Hydra conventions a user relies on: the callbacks group, named experiments, debug modes,
epochs on TensorBoard's x-axis and the study's comparison layout."""

import json
import logging
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from lightning import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_study.models.backbones import build_backbone
from mnist_study.runs.terminal import TerminalFormatter
from mnist_study.training.callbacks import (
    DivergenceGuard,
    EpochLearningRate,
    EpochSeed,
    EpochSummary,
    EpochTimer,
    loss_text,
)
from mnist_study.training.checkpoint_io import RunFolderCheckpoint
from mnist_study.training.error_analysis import ErrorAnalysis, percent_text
from mnist_study.training.pipeline import build_callbacks, train
from mnist_study.training.precision import auto_precision, forward_flops_per_image, resolve_precision
from mnist_study.training.tensorboard import HParams, OneCurvePerRun, StudyComparison, run_title

from .conftest import CONF, TEST_SIZE
from .helpers.logs import scalars


def test_the_callbacks_group_lists_the_runs_callbacks_and_the_command_line_edits_it(make_cfg) -> None:
    kinds = [type(c) for c in build_callbacks(make_cfg())]
    assert kinds == [
        RunFolderCheckpoint, RunFolderCheckpoint, EpochSeed, DivergenceGuard, EpochTimer, OneCurvePerRun,
        StudyComparison, EpochLearningRate, EpochSummary, HParams, ErrorAnalysis,
    ]  # fmt: skip
    assert EpochLearningRate not in [type(c) for c in build_callbacks(make_cfg("~callbacks.learning_rate"))]
    added = build_callbacks(
        make_cfg("+callbacks.stop={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/acc, mode: max}")
    )
    assert type(added[-1]).__name__ == "EarlyStopping" and added[-1].monitor == "val/acc"


def test_every_chart_has_the_epoch_from_1_as_x_axis_the_learning_rate_too(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=softmax", "trainer.max_epochs=3", "trainer.log_every_n_steps=2"))
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    per_run = f"val_vs_train/{tmp_path.name}/run/acc/train"
    epoch_tags = ("train/acc", "val/loss", "train/epoch_s", "train/lr", "val_by_model/softmax/acc", per_run)
    for tag in epoch_tags:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    for tag in ("val_best/test_acc", "val_best/val_acc", "val_best/confusion_matrix"):  # one point: the last epoch
        assert [e.step for e in (events.Images if "matrix" in tag else events.Scalars)(tag)] == [3], tag
    assert max(e.step for tag in events.Tags()["scalars"] for e in events.Scalars(tag)) == 3  # no step axis at all
    rates = [e.value for e in events.Scalars("train/lr")]  # at each epoch's end: one-cycle's way down
    assert rates == sorted(rates, reverse=True) and rates[0] < 0.0005 and rates[-1] < rates[0] / 100


def test_a_constant_rate_is_logged_under_the_same_tag(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=softmax", "scheduler=none", "trainer.max_epochs=2"))
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/lr")] == [
        (1, pytest.approx(0.0005)),
        (2, pytest.approx(0.0005)),
    ]
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("lr-")]  # LearningRateMonitor's fallback


def test_a_learning_rate_per_step_can_be_added_and_keeps_its_own_axis(make_cfg, tmp_path: Path) -> None:
    monitor = "{_target_: lightning.pytorch.callbacks.LearningRateMonitor, logging_interval: step}"
    train(make_cfg("model=softmax", "trainer.log_every_n_steps=2", f"+callbacks.lr_steps={monitor}"))
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/lr")] == [1]  # train/ keeps the epoch axis
    assert len(events.Scalars("z_steps/lr")) > 3  # per optimizer step, in a group that sorts after the study's


def test_time_series_opens_on_the_training_and_validation_curves(sweep: Path) -> None:
    """TensorBoard's Time Series groups the cards by the tag's first segment, sorts the groups and expands only the
    first two: they must be train/ and val/, not the comparison copies or single-point cards."""
    for run in (r for r in sweep.iterdir() if (r / "result.json").is_file()):
        events = EventAccumulator(str(run))
        events.Reload()
        tags = events.Tags()
        groups = sorted({tag.split("/", 1)[0] for tag in tags["scalars"] + tags["images"]})
        assert groups[:2] == ["train", "val"], groups
        assert set(groups) == {"train", "val", "val_best", "val_by_model", "val_by_regularizer", "val_vs_train"}


def test_the_comparison_layout_holds_only_the_sweeps_models_and_regularizers(sweep: Path) -> None:
    titles, runs = set(), set()
    for run in sweep.iterdir():
        if not (run / ".hydra").is_dir():
            continue
        events = EventAccumulator(str(run))
        events.Reload()
        [written] = events.Tensors("custom_scalars__config__")
        layout = layout_pb2.Layout.FromString(written.tensor_proto.string_val[0])
        titles |= {chart.title for category in layout.category for chart in category.chart}
        result = json.loads((run / "result.json").read_text())
        model, regularizer = result["model"], result["regularizer"]
        logged = scalars(run)
        assert f"val_by_model/{model}/acc" in logged and f"val_by_regularizer/{regularizer}/loss" in logged
        run_id = f"{sweep.name}/{run.name}"  # unique in the outputs folder: the sweep's folder and the job's
        assert logged[f"val_vs_train/{run_id}/loss/train"] == logged["train/loss"]  # this run's chart, its own tags
        assert logged[f"val_vs_train/{run_id}/acc/validation"] == logged["val/acc"]
        runs.add(run_id)
    per_network = {f"{name}: val {m}" for name in ("softmax", "mlp", "none", "bn") for m in ("acc", "loss")}
    per_run = {f"{run_title(run)}: {words}, train vs validation" for run in runs for words in ("accuracy", "loss")}
    assert len(runs) == 4 and titles == per_network | per_run


def test_experiment_study_is_the_nine_network_grid() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=study"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    grid = {(m, r) for m in params.model.split(",") for r in params.regularizer.split(",")}
    assert grid == {(m, r) for m in ("softmax", "mlp", "cnn") for r in ("none", "dropout", "bn")}
    assert cfg.model.name == "cnn" and cfg.trainer.max_epochs == 30  # the study's defaults are the shipped ones


def test_debug_fast_runs_one_batch_through_fit_validate_and_test(make_cfg, tmp_path: Path, add_callback) -> None:
    class CountBatches(Callback):
        def __init__(self) -> None:
            self.batches = {"train": 0, "validation": 0, "test": 0}

        def on_train_batch_end(self, *args) -> None:
            self.batches["train"] += 1

        def on_validation_batch_end(self, *args) -> None:
            self.batches["validation"] += 1

        def on_test_batch_end(self, *args) -> None:
            self.batches["test"] += 1

    counter = CountBatches()
    add_callback(counter)
    result = train(make_cfg("model=mlp", "debug=fast"))
    assert counter.batches == {"train": 1, "validation": 1, "test": 1} and result["epochs"] == 1
    assert not list((tmp_path / "run").glob("**/*.ckpt"))


def test_debug_overfit_memorizes_its_few_batches(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=mlp", "debug=overfit", "trainer.max_epochs=15"))
    assert scalars(tmp_path / "run")["train/acc"][-1] == 1.0


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx2", "avx512f", "avx512_bf16"}, "bf16-mixed"), ({"amx_bf16"}, "bf16-mixed"), ({"avx2", "fma"}, "32-true")],
)
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(flags: set[str], expected: str) -> None:
    precision, why = auto_precision(on_gpu=False, flags=flags)
    assert precision == expected
    assert ("natively" in why) == (expected == "bf16-mixed")


@pytest.mark.parametrize(("model", "expected"), [("softmax", "32-true"), ("mlp", "bf16-mixed"), ("cnn", "bf16-mixed")])
def test_auto_precision_keeps_networks_too_small_to_gain_in_fp32(model: str, expected: str) -> None:
    flops = forward_flops_per_image(build_backbone({"name": model}, {"name": "bn"}))
    precision, why = auto_precision(on_gpu=False, flags={"avx512_bf16"}, flops_per_image=flops)
    assert precision == expected and f"{flops / 1e6:.2g} MFLOP per image" in why
    template_mlp = build_backbone({"name": "mlp", "hidden_sizes": [64, 128, 64]}, {"name": "bn"})
    assert auto_precision(False, {"avx512_bf16"}, forward_flops_per_image(template_mlp))[0] == "32-true"


def test_auto_precision_is_resolved_and_logged_and_32_true_forces_fp32(make_cfg, caplog) -> None:
    options = {"precision": "auto", "accelerator": "cpu"}
    with caplog.at_level("INFO"):
        train(make_cfg("model=softmax", "trainer.precision=auto"))
    assert "trainer.precision=auto: this CPU" in caplog.text
    assert resolve_precision(options).startswith(options["precision"]) and options["precision"] != "auto"
    forced = {"precision": "32-true", "accelerator": "cpu"}
    assert resolve_precision(forced) == "32-true (as configured)" and forced["precision"] == "32-true"


def test_bf16_runs_are_reproducible_bit_for_bit(make_cfg, tmp_path: Path) -> None:
    for name in ("first", "second"):
        train(make_cfg("model=mlp", "regularizer=dropout", "trainer.precision=bf16-mixed", output_dir=tmp_path / name))
    first, second = scalars(tmp_path / "first"), scalars(tmp_path / "second")
    assert all(first[tag] == second[tag] for tag in ("train/loss", "val/loss", "val/acc", "val_best/test_acc"))


def test_each_run_of_a_sweep_is_one_event_file_read_whole(sweep: Path) -> None:
    """Fit and test write to one file: two files of a run finished within a second can be read out of order
    (name.9 after name.10), and TensorBoard then purges the tested checkpoint's val_best/* points."""
    runs = [run for run in sweep.iterdir() if (run / "result.json").is_file()]
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert {"val/acc", "val_best/test_acc", "val_best/val_acc"} <= set(scalars(run))


def test_hparams_declare_the_same_columns_for_every_run_of_a_sweep(sweep: Path) -> None:
    runs = [run for run in sweep.iterdir() if (run / "result.json").is_file()]
    assert len(runs) == 4
    for run in runs:
        events = EventAccumulator(str(run))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        columns = [h.name for h in experiment.hparam_infos]
        assert columns == ["model", "regularizer", "lr", "seed", "optimizer"]  # TensorBoard shows 5 by default
        assert {m.name.tag for m in experiment.metric_infos} >= {"val_best/test_acc", "val_best/val_acc"}
        session = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        result = json.loads((run / "result.json").read_text())
        assert session.hparams["model"].string_value == result["model"]
        assert session.hparams["regularizer"].string_value == result["regularizer"]
        assert session.hparams["seed"].string_value == str(result["seed"])  # a label: "0", not 0.0000
        assert session.hparams["lr"].number_value == result["lr"]
        assert session.group_name == f"{run.name} ({sweep.name})"  # the job first; unique, so never merged
        assert scalars(run)["val_best/test_acc"] == [pytest.approx(result["test/acc"])]  # the table's test acc


def test_the_tested_checkpoints_mistakes_are_drawn_and_counted(make_cfg, tmp_path: Path) -> None:
    result = train(make_cfg("model=mlp"))
    matrix = result["confusion_matrix"]
    assert sum(map(sum, matrix)) == TEST_SIZE
    assert sum(matrix[i][i] for i in range(10)) / TEST_SIZE == pytest.approx(result["test/acc"], abs=1e-6)
    assert result["per_class_acc"] == pytest.approx([matrix[i][i] / max(sum(matrix[i]), 1) for i in range(10)])
    for name in ("confusion_matrix", "misclassified"):
        assert (tmp_path / "run" / f"{name}.png").stat().st_size > 5_000
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert {"val_best/confusion_matrix", "val_best/misclassified"} <= set(events.Tags()["images"])


def test_the_mistakes_figure_shows_enough_digits_to_rank_the_confidences() -> None:
    assert [percent_text(p) for p in (0.973, 0.9997, 0.99997, 0.999994, 0.9999994, 0.99999999)] == [
        "97.3%", "99.97%", "99.997%", "99.999%", "99.9999%", ">99.99999%"
    ]  # fmt: skip
    assert percent_text(1.0) == "100%"  # float32 could not tell it from 1


def test_every_epoch_gets_a_summary_line_in_the_log(make_cfg, caplog) -> None:
    with caplog.at_level("INFO", logger="mnist_study.training.callbacks"):
        train(make_cfg("model=softmax", "trainer.max_epochs=2"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert all(
        re.fullmatch(r"epoch \d/2  train loss \S+ acc \S+  val loss \S+ acc \S+  \d+\.\d s", line) for line in lines
    )


def test_a_loss_near_zero_still_reads_as_a_number() -> None:
    assert [loss_text(x) for x in (2.3026, 0.0213, 0.00345, 3.2e-05, 0.0)] == [
        "2.3026", "0.0213", "0.00345", "3.2e-05", "0.0000"
    ]  # fmt: skip


def test_the_terminal_shows_the_message_alone_and_the_level_of_warnings() -> None:
    line = "epoch 30/30  train loss 3.2e-05 acc 1.0000  val loss 0.0302 acc 0.9912  12.8 s"
    record = logging.LogRecord("mnist_study.training.callbacks", logging.INFO, __file__, 1, line, None, None)
    assert TerminalFormatter().format(record) == line and len(line) <= 80
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    assert TerminalFormatter().format(record) == f"WARNING: {line}"


def test_the_progress_bar_counts_epochs_from_1_like_the_log(make_cfg, capfd: pytest.CaptureFixture) -> None:
    train(make_cfg("model=softmax", "trainer.enable_progress_bar=true", "trainer.max_epochs=2"))
    drawn = re.findall(r"Epoch ([^:]+): +(\d+)%", capfd.readouterr().out)  # Lightning draws its bars on stdout
    # (Lightning's own "Epoch 0" is drawn once at 0 %, on the line that is at once redrawn as "Epoch 1/2")
    assert {epoch for epoch, percent in drawn if percent != "0"} == {"1/2", "2/2"}
