"""A run is what its checkpoint says: a resume that would change the run's trajectory is refused before anything is
written; a resume tests the run's own best checkpoint; only a run's newest checkpoint resumes it; a crafted
checkpoint is not one of this project; a resume writes and logs into its own run folder."""

import logging
import math
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from mnist_study.runs.ending import run_task
from mnist_study.runs.locks import held_folders
from mnist_study.runs.signals import stop_record
from mnist_study.training.pipeline import train

from .conftest import ROOT, compose_train, data_overrides, refused_in_one_line, run_script, snapshot

CONSTANT_RATE = ("model=softmax", "scheduler=none")  # a constant rate: a resume may add epochs


@pytest.fixture(scope="module")
def finished_run(synthetic_mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch softmax run, shared: tests copy it before they change anything."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(compose_train(synthetic_mnist, *CONSTANT_RATE, output_dir=run_dir))
    held_folders().release_all()  # as run_task does when a run ends: the folder is left as train.py leaves it
    return run_dir


@pytest.fixture
def interrupted_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run as a stopped one looks: last.ckpt, failed.txt, no result.json."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "result.json").unlink()
    (run_dir / "failed.txt").write_text("terminated by SIGTERM after epoch 0\n")
    return run_dir


def test_the_checkpoint_records_everything_that_shapes_the_run(finished_run: Path, synthetic_mnist) -> None:
    saved = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["run"]
    assert saved["seed"] == 0 and saved["data.split_seed"] == 0 and saved["data.batch_size"] == 50
    assert saved["data.val_size"] == 100 and saved["trainer.precision"] == "32-true"
    assert saved["data.checksums"] == synthetic_mnist[1] and saved["callbacks.epoch_seed.seed"] == 0
    assert saved["trainer.limit_train_batches"] is None and saved["trainer.devices"] == 1


@pytest.mark.parametrize(
    ("override", "key", "recorded", "given"),
    [
        ("data.batch_size=64", "data.batch_size", "50", "64"),
        ("+trainer.limit_train_batches=3", "trainer.limit_train_batches", "null", "3"),
        ("data.val_size=50", "data.val_size", "100", "50"),
        ("seed=5", "seed", "0", "5"),
        ("data.split_seed=7", "data.split_seed", "0", "7"),
        ("trainer.precision=bf16-mixed", "trainer.precision", "32-true", "bf16-mixed"),
        ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches", "null", "2"),
        ("callbacks.epoch_seed.seed=3", "callbacks.epoch_seed.seed", "0", "3"),
        ("trainer.devices=2", "trainer.devices", "1", "2"),
    ],
)
def test_a_resume_that_would_change_the_run_is_refused_before_anything_is_written(
    make_cfg, capsys, interrupted_copy: Path, tmp_path: Path, override: str, key: str, recorded: str, given: str
) -> None:
    last = interrupted_copy / "checkpoints" / "last.ckpt"
    before = snapshot(interrupted_copy)
    cfg = make_cfg(*CONSTANT_RATE, "trainer.max_epochs=2", override, f"ckpt_path={last}", output_dir=tmp_path / "new")
    err = refused_in_one_line(train, cfg, capsys)
    assert err.startswith(
        f"error: ckpt_path={last} was trained with {key}={recorded}, this run has {key}={given}: "
        f"pass {key}={recorded} to resume it"
    ), err
    assert snapshot(interrupted_copy) == before  # last.ckpt not overwritten, failed.txt kept
    assert not (tmp_path / "new").exists()  # and no empty run folder


def test_a_resume_from_a_copy_outside_any_run_folder_tests_its_own_weights_in_a_new_folder(
    make_cfg, finished_run: Path, tmp_path: Path, caplog
) -> None:
    """Lightning restores best_model_path from the checkpoint: the copy would test the original run's best."""
    checkpoint = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"] = {k: torch.full_like(v, math.nan) for k, v in checkpoint["state_dict"].items()}
    copy = tmp_path / "elsewhere" / "copy.ckpt"
    copy.parent.mkdir()
    torch.save(checkpoint, copy)
    before = snapshot(finished_run)
    with caplog.at_level(logging.WARNING, logger="mnist_study.training.resume"):
        result = train(make_cfg(*CONSTANT_RATE, f"ckpt_path={copy}", output_dir=tmp_path / "new"))
    assert math.isnan(result["test/loss"])  # the copy's own (NaN) weights were tested
    assert (tmp_path / "new" / "result.json").is_file() and snapshot(finished_run) == before
    (line,) = [r.getMessage() for r in caplog.records if "outside any run folder" in r.getMessage()]
    assert str(tmp_path / "new") in line


def test_only_the_newest_checkpoint_of_a_run_resumes_it(make_cfg, capsys, finished_run: Path) -> None:
    (best,) = (finished_run / "checkpoints").glob("best-*.ckpt")
    err = refused_in_one_line(train, make_cfg(*CONSTANT_RATE, "trainer.max_epochs=2", f"ckpt_path={best}"), capsys)
    assert err.startswith(f"error: ckpt_path={best} is not the newest checkpoint of its run"), err
    assert f"ckpt_path={best.parent / 'last.ckpt'}" in err and f"python eval.py ckpt_path={best}" in err


def shapes_changed(checkpoint: dict) -> None:
    checkpoint["state_dict"]["net.1.weight"] = torch.zeros(5, 784)


@pytest.mark.parametrize(
    ("craft", "problem"),
    [
        (shapes_changed, "its net.1.weight has shape [5, 784], this network's has [10, 784]"),
        (lambda c: c.pop("optimizer_states"), "it has no optimizer state"),
        (lambda c: c.update(epoch="zero"), "its epoch is 'zero', not a count"),
        (lambda c: c["state_dict"].pop("net.1.bias"), "its weights lack net.1.bias"),
        (lambda c: c.pop("loops"), "it has no state of Lightning's training loop"),
    ],
)
def test_a_crafted_checkpoint_is_not_one_of_this_project(
    make_cfg, capsys, finished_run: Path, tmp_path: Path, craft, problem: str
) -> None:
    checkpoint = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    craft(checkpoint)
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    err = refused_in_one_line(train, make_cfg(*CONSTANT_RATE, "trainer.max_epochs=2", f"ckpt_path={path}"), capsys)
    assert err.startswith(f"error: ckpt_path={path} is not a checkpoint of this project: {problem}"), err


def test_a_moved_run_keeps_its_ranking_and_a_foreign_checkpoint_brings_none(tmp_path: Path) -> None:
    from mnist_study.training.checkpoint_io import RunFolderCheckpoint

    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    new.mkdir(parents=True)
    (new / "best-epoch03.ckpt").write_bytes(b"")
    best = str(old / "best-epoch03.ckpt")
    state = {"dirpath": str(old), "best_model_path": best, "best_model_score": 0.9, "best_k_models": {best: 0.9},
             "kth_best_model_path": "", "last_model_path": ""}  # fmt: skip
    moved = RunFolderCheckpoint(dirpath=str(new), monitor="val/acc", mode="max")
    moved.load_state_dict(dict(state))
    assert moved.best_model_path == str(new / "best-epoch03.ckpt") and moved.best_model_score == 0.9
    assert list(moved.best_k_models) == [str(new / "best-epoch03.ckpt")]
    elsewhere = RunFolderCheckpoint(dirpath=str(tmp_path / "other" / "checkpoints"), monitor="val/acc", mode="max")
    elsewhere.load_state_dict(dict(state))
    assert elsewhere.best_model_path == "" and elsewhere.best_model_score is None


def test_a_stopped_runs_resume_command_quotes_a_folder_name_for_hydra(tmp_path: Path) -> None:
    folder = tmp_path / "2026-01-01_cnn-none,seed=1"
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 3}, folder / "checkpoints" / "last.ckpt")
    record = stop_record(15, folder, None, "python train.py seed=1")
    override = record.split("resume it with: python train.py seed=1 ", 1)[1]
    (argument,) = shlex.split(override)
    assert OverridesParser.create().parse_override(argument).value() == str(folder / "checkpoints" / "last.ckpt")


def test_a_resume_writes_and_logs_into_its_run_folder_with_no_stub_folder(synthetic_mnist, tmp_path: Path) -> None:
    """From the command line, in the default folders (outputs/runs/<time>_<name with , and =>), as a user would."""
    run_dir = tmp_path / "outputs" / "runs" / "2026-01-01_00-00-00-000000_softmax-none,scheduler=none"
    run_task(train, compose_train(synthetic_mnist, *CONSTANT_RATE, output_dir=run_dir))  # as the first command would
    (run_dir / "train.log").write_text("[the first attempt's log]\n")
    last = run_dir / "checkpoints" / "last.ckpt"
    options = [*data_overrides(*synthetic_mnist), *CONSTANT_RATE, "trainer.max_epochs=2", f"ckpt_path='{last}'"]
    resumed = run_script(str(ROOT / "train.py"), *options, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list((tmp_path / "outputs" / "runs").iterdir()) == [run_dir]  # no stub folder for the resume
    log = (run_dir / "train.log").read_text()
    assert log.startswith("[the first attempt's log]\n") and "epoch 2/2" in log  # appended to the run's own log
