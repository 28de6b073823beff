"""train.py end to end on the synthetic set: TensorBoard tags, checkpoints, resume, sweeps, errors."""

import os
import re
from pathlib import Path

import pytest
import torch
from lightning import Callback
from lightning.pytorch.profilers import PassThroughProfiler
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from mnist_study.errors import UserError
from mnist_study.models.classifier import MNISTClassifier
from mnist_study.models.optim import build_optimizer
from mnist_study.training.pipeline import build_classifier, build_datamodule, build_trainer, train
from mnist_study.training.upstream import skip_lightnings_nvml_check_without_gpus

from .conftest import ROOT, TRAIN_SIZE, VAL_SIZE, data_overrides, run_script
from .helpers.logs import assert_logged_metrics_are_the_checkpoints, scalars

EPOCH_TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "train/epoch_s", "train/images_per_s"}


def steps(run_dir: Path) -> dict[str, list[int]]:
    """Each scalar tag's x-axis values, as TensorBoard's event reader keeps them."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def layout(run_dir: Path) -> layout_pb2.Layout:
    """The custom-scalars layout the run wrote."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    [written] = events.Tensors("custom_scalars__config__")
    return layout_pb2.Layout.FromString(written.tensor_proto.string_val[0])


def test_one_epoch_writes_metrics_hparams_and_checkpoints(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("model=mlp", "regularizer=bn", "trainer.max_epochs=2"))

    run = tmp_path / "run"
    logged = scalars(run)
    assert logged.keys() >= EPOCH_TAGS
    assert all(len(logged[tag]) == 2 for tag in EPOCH_TAGS)  # once per epoch, not per step
    for images_per_s, epoch_s in zip(logged["train/images_per_s"], logged["train/epoch_s"], strict=True):
        assert images_per_s * epoch_s > 1.001 * (TRAIN_SIZE - VAL_SIZE)  # over the training time alone
    assert metrics["exploded"] is False
    assert logged["val_best/test_acc"] == [pytest.approx(metrics["test/acc"])]
    assert metrics["test/acc"] > 0.5  # the synthetic digits are easy
    assert logged["val_best/val_acc"] == [pytest.approx(metrics["best_val/acc"])] == [max(logged["val/acc"])]
    assert not [tag for tag in logged if tag.startswith("hp/")]  # the HPARAMS tab reads val_best/ and val/ directly
    assert_logged_metrics_are_the_checkpoints(run, make_cfg())

    best_epoch = logged["val/acc"].index(max(logged["val/acc"])) + 1  # epochs count from 1, as in the log
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", f"best-epoch{best_epoch:02d}.ckpt"}
    assert not (run / "hparams.yaml").exists()  # Lightning's, which would hold {}: the config is in .hydra/
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["model"] == {"name": "mlp", "hidden_sizes": [512, 256]}
    assert saved["hyper_parameters"]["optimizer"]["lr"] == 0.001


def test_test_every_epoch_logs_test_curves_apart_from_model_selection(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=softmax", "test_every_epoch=true", "trainer.max_epochs=2"))
    logged = scalars(tmp_path / "run")
    assert len(logged["test_epoch/acc"]) == 2 and len(logged["test_epoch/loss"]) == 2
    assert len(logged["val/acc"]) == 2
    for split in ("val", "test"):  # each curve is its own split's, whatever the order of the loaders
        assert_logged_metrics_are_the_checkpoints(tmp_path / "run", make_cfg(), split)


def test_resume_continues_the_run_in_its_own_directory(make_cfg, tmp_path: Path) -> None:
    # A schedule fixes its length at the start (one-cycle), so extending a run needs scheduler=none.
    train(make_cfg("model=softmax", "scheduler=none", output_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = ("model=softmax", "scheduler=none", "trainer.max_epochs=3", f"ckpt_path={last}")
    train(make_cfg(*resumed, output_dir=tmp_path / "second"))
    logged = steps(tmp_path / "first")
    assert logged["val/acc"] == logged[f"val_vs_train/{tmp_path.name}/first/acc/validation"] == [1, 2, 3]
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_a_resume_that_redoes_an_epoch_keeps_one_curve(make_cfg, tmp_path: Path) -> None:
    """A run killed after it logged an epoch but before that epoch's last.ckpt was written redoes the epoch when
    resumed: TensorBoard, and the event reader the report uses, keep the redone epoch once."""
    run = ("model=softmax", "scheduler=none", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}")
    train(make_cfg("model=softmax", "scheduler=none"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    after_epoch_1 = last.read_bytes()
    train(make_cfg(*run, "trainer.max_epochs=2"))
    last.write_bytes(after_epoch_1)  # epoch 2 is logged, its checkpoint lost
    train(make_cfg(*run, "trainer.max_epochs=3"))

    logged = steps(tmp_path / "run")
    for tag in ("val/acc", "train/loss", "train/lr", f"val_vs_train/{tmp_path.name}/run/acc/train"):
        assert logged[tag] == [1, 2, 3], tag
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 3  # one per attempt: none removed


def test_a_job_trained_again_from_scratch_in_its_folder_replaces_its_curves(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=softmax", "trainer.max_epochs=2"))
    for stale in [tmp_path / "run" / "result.json", *(tmp_path / "run" / "checkpoints").iterdir()]:
        stale.unlink()  # e.g. a sweep job that failed is trained again
    train(make_cfg("model=softmax", "trainer.max_epochs=1"))
    assert steps(tmp_path / "run")["val/acc"] == [1]


def test_a_sweep_run_again_draws_each_run_in_its_own_charts(make_cfg, tmp_path: Path) -> None:
    """The same job in two sweep folders under one log root (tensorboard --logdir outputs/multirun): each
    per-run chart of Custom Scalars matches its own run's two series, train and validation, never the other's."""
    for sweep in ("sweep-1", "sweep-2"):
        train(make_cfg("model=softmax", output_dir=tmp_path / sweep / "softmax-none,seed=0"))
    runs = {events.parent for events in tmp_path.glob("*/*/events.out.tfevents.*")}
    tags = {run: set(steps(run)) for run in runs}
    charts = [chart for run in runs for category in layout(run).category for chart in category.chart]
    per_run = [chart for chart in charts if chart.title.endswith(", train vs validation")]
    assert len(per_run) == 4 and len({chart.title for chart in per_run}) == 4  # acc and loss of each run
    for chart in per_run:
        (pattern,) = chart.multiline.tag
        matches = {(run.parent.name, tag) for run in runs for tag in tags[run] if re.match(pattern, tag)}
        assert len(matches) == 2 and len({run for run, _ in matches}) == 1, chart.title
        assert {tag.rsplit("/", 1)[1] for _, tag in matches} == {"train", "validation"}


def test_resume_refuses_a_checkpoint_of_another_model(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=softmax", output_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(
        UserError, match=r"was trained with model=softmax, this run has model=mlp: pass model=softmax to resume it"
    ):
        train(make_cfg("model=mlp", f"ckpt_path={last}"))


def test_cli_single_run_and_wrong_options(synthetic_mnist, tmp_path: Path) -> None:
    overrides = data_overrides(*synthetic_mnist)
    ok = run_script("train.py", "model=softmax", f"hydra.run.dir={tmp_path / 'run'}", *overrides, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "test/acc=" in ok.stdout and list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert not (tmp_path / "run" / "run.lock").exists() and not (tmp_path / "run" / "hparams.yaml").exists()
    assert re.search(r"^epoch 1/1  train loss \S+ acc \S+  val loss \S+ acc \S+  \d+\.\d s$", ok.stdout, re.M)
    assert (
        "][mnist_study.training.callbacks][INFO] - epoch 1/1  train loss"
        in (tmp_path / "run" / "train.log").read_text()
    )

    # Hydra's own message for an option that does not exist; a bad value of a real option is one line of ours
    # (test_config_schema.py::test_train_py_refuses_a_bad_value_with_one_line_and_exit_code_1).
    wrong = run_script("train.py", "model=foo", *overrides, cwd=ROOT)
    assert wrong.returncode != 0
    assert "Available options in 'model'" in wrong.stderr and "Traceback" not in wrong.stderr


def test_help_lists_the_groups_a_user_chooses_from() -> None:
    result = run_script("train.py", "--help", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "model: cnn, mlp, softmax\n" in groups and "regularizer: bn, dropout, none\n" in groups
    assert "schema" not in groups and "hydra" not in groups  # the typed schemas are internal


def test_a_bad_command_line_is_answered_before_torch_and_lightning_load() -> None:
    code = (
        "import runpy, sys\n"
        "sys.argv = ['train.py', 'data.batch_size=abc']\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as stop:\n    print(stop.code)\n"
        "print(sorted(name for name in ('torch', 'lightning') if name in sys.modules))"
    )
    result = run_script("-c", code, cwd=ROOT)
    assert result.stderr.strip() == "error: data.batch_size must be a positive integer, got 'abc'"
    assert result.stdout.split() == ["1", "[]"]


def test_cli_multirun_names_runs_by_their_overrides(sweep: Path) -> None:
    # the session's `train.py -m model=softmax,mlp regularizer=none,bn trainer.max_epochs=2 ...`
    names = sorted(run.name for run in sweep.iterdir() if (run / ".hydra").is_dir())
    networks = sorted(f"{m}-{r}" for m in ("softmax", "mlp") for r in ("none", "bn"))
    assert [name.split(",")[0] for name in names] == networks  # the network first, then the other overrides
    for name in names:
        assert list((sweep / name).glob("events.out.tfevents.*")) and (sweep / name / "checkpoints/last.ckpt").is_file()


def test_speed_switches_train_the_same_network(make_cfg, tmp_path: Path) -> None:
    # channels_last and bf16 change how the arithmetic runs, not the network: its checkpoint loads into the
    # plain module and evaluates to the validation numbers that were logged.
    cfg = make_cfg("model=cnn", "channels_last=true", "trainer.precision=bf16-mixed", output_dir=tmp_path / "fast")
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.5
    saved = torch.load(tmp_path / "fast" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(value.dtype == torch.float32 for value in saved["state_dict"].values() if value.is_floating_point())
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    images, labels = datamodule.splits["val"]
    model = MNISTClassifier.load_from_checkpoint(tmp_path / "fast" / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert scalars(tmp_path / "fast")["val/acc"][-1] == pytest.approx(accuracy, abs=1e-6)


def test_adam_takes_each_networks_own_learning_rate_unless_told_otherwise(make_cfg) -> None:
    assert make_cfg("model=mlp").optimizer.lr == 0.001
    assert make_cfg("model=cnn").optimizer.lr == make_cfg("model=cnn", "optimizer=adamw").optimizer.lr == 0.004
    assert make_cfg("model=cnn", "optimizer.lr=0.01").optimizer.lr == 0.01
    assert make_cfg("model=cnn", "optimizer=sgd").optimizer.lr == 0.05


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "none"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_every_optimizer_and_schedule_option_builds_what_it_names(make_cfg, optimizer: str, scheduler: str) -> None:
    cfg = make_cfg(
        f"optimizer={optimizer}", f"scheduler={scheduler}", "optimizer.lr=0.01", "optimizer.weight_decay=0.1"
    )
    built, schedule = build_optimizer(build_classifier(cfg).parameters(), cfg.optimizer, cfg.scheduler, 100)

    assert type(built).__name__.lower() == optimizer
    assert built.defaults["weight_decay"] == 0.1
    rates = []
    for _ in range(100):
        rates.append(built.param_groups[0]["lr"])
        built.step()
        if schedule is not None:
            schedule.step()
    assert max(rates) == pytest.approx(0.01)  # optimizer.lr is the peak of every schedule
    if scheduler == "onecycle":
        assert rates.index(max(rates)) == 24  # warm-up over pct_start = 0.25 of the 100 steps
    if scheduler != "none":
        assert rates[-1] < 0.001


@pytest.mark.slow
def test_compiled_backbone_trains_and_saves_plain_keys(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("model=mlp", "compile=true", output_dir=tmp_path / "compiled"))
    saved = torch.load(tmp_path / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(saved["state_dict"]) >= {"net.1.weight", "net.1.bias"}


def test_cpu_runs_turn_lightnings_nvml_check_back_off(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import; while it is set, torch loads NVML in every Adam step.
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    skip_lightnings_nvml_check_without_gpus()  # what train.py does first
    assert ("PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ) is torch.cuda.is_available()
    train(make_cfg("model=softmax"))
    assert ("PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ) is torch.cuda.is_available()  # nothing sets it again


def test_lightning_profilers_can_be_switched_on(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="lightning.pytorch.profilers"):
        train(make_cfg("model=softmax", "trainer.profiler=simple"))
    assert "FIT Profiler Report" in caplog.text and "run_training_batch" in caplog.text


def test_without_a_profiler_asked_for_the_trainer_records_nothing(make_cfg, tmp_path: Path) -> None:
    profiler = build_trainer(make_cfg("model=softmax"), tmp_path).profiler
    assert isinstance(profiler, PassThroughProfiler)  # what Lightning's own default is
    with profiler.profile("run_training_batch"), profiler.profile("[Callback]EpochTimer.on_train_batch_end"):
        pass  # Lightning nests its actions
    assert profiler.summary() == ""


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16-mixed: Lightning itself refuses to clip
def test_gradient_clipping_still_applies_when_asked_for(make_cfg, add_callback, tmp_path: Path, precision: str) -> None:
    class StepSize(Callback):
        def on_train_start(self, trainer, module) -> None:
            self.before = torch.nn.utils.parameters_to_vector(module.parameters()).detach().clone()

        def on_train_end(self, trainer, module) -> None:
            self.size = (torch.nn.utils.parameters_to_vector(module.parameters()) - self.before).norm().item()

    add_callback(step := StepSize())
    sizes = {}
    for clip in (None, 1e-3):
        options = ("model=softmax", "data.batch_size=500", "optimizer=sgd", "optimizer.lr=1", "optimizer.momentum=0",
                   "optimizer.nesterov=false", "scheduler=none", f"trainer.precision={precision}")  # fmt: skip
        clipping = [f"+trainer.gradient_clip_val={clip}"] if clip else []
        train(make_cfg(*options, *clipping, output_dir=tmp_path / str(clip)))
        sizes[clip] = step.size
    assert sizes[None] > 0.01  # one step (500 images) of plain SGD: lr * |gradient|, clipped to 1e-3 or not
    assert sizes[1e-3] == pytest.approx(1e-3, rel=1e-3)
