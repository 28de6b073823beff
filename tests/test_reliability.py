"""Reproducible runs, exact resume, atomic checkpoints, divergence, skipped re-runs and one-line errors."""

import signal
from pathlib import Path

import pytest
import torch
from lightning import Callback, LightningModule, Trainer

from mnist_study.callbacks import DivergenceError
from mnist_study.cli import run_task
from mnist_study.mnist_files import FILES, raw_dir
from mnist_study.training import train

from .conftest import TRAIN_SIZE, write_synthetic_mnist
from .test_train import scalars

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
    other_seed = train(make_cfg(*config, "seed=1", output_dir=tmp_path / "c"))
    assert scalars(tmp_path / "c")["train/loss"] != a["train/loss"] or other_seed != first


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


def test_divergence_stops_with_the_epoch_step_and_a_hint(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(DivergenceError) as caught:
        train(make_cfg("model=mlp", "optimizer.lr=1e12", "scheduler=none", output_dir=tmp_path / "run"))
    assert "non-finite at epoch 0, step" in str(caught.value)
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


def test_checkpoint_of_another_model_is_named(make_cfg, tmp_path: Path, capsys) -> None:
    train(make_cfg("model=softmax", output_dir=tmp_path / "softmax"))
    last = tmp_path / "softmax" / "checkpoints" / "last.ckpt"
    err = fails_with(make_cfg("model=mlp", f"ckpt_path={last}"), capsys)
    assert "is a checkpoint of model={'name': 'softmax'}" in err


def test_corrupted_idx_file_names_file_md5_and_fix(make_cfg, tmp_path: Path, capsys) -> None:
    checksums = write_synthetic_mnist(tmp_path / "data")
    path = raw_dir(tmp_path / "data") / FILES["test_labels"]
    path.write_bytes(path.read_bytes()[:-3])  # truncated
    err = fails_with(make_cfg(f"data.data_dir={tmp_path / 'data'}"), capsys)
    assert str(path) in err and f"expected {checksums['test_labels']}" in err and "delete" in err


def test_unwritable_data_dir_is_named(make_cfg, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = fails_with(make_cfg(f"data.data_dir={blocker / 'data'}"), capsys)
    assert "set data.data_dir to a writable folder" in err or "no MNIST source worked" in err


@pytest.mark.parametrize("override", ["model=foo", "regularizer=l2", "optimizer=rmsprop", "scheduler=step"])
def test_unknown_group_options_list_the_available_ones(make_cfg, override: str) -> None:
    from hydra.errors import MissingConfigException

    group = override.split("=")[0]
    with pytest.raises(MissingConfigException, match=f"Could not find '{group}/"):
        make_cfg(override)
