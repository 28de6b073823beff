"""eval.py: a checkpoint evaluated on its own gives the numbers its run reported; what is no usable checkpoint is
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnist_study.errors import UserError
from mnist_study.inference.evaluate import EVAL_FILE, evaluate

from .conftest import ROOT, run_script
from .helpers.configs import tool_cfg
from .helpers.trained import best_checkpoint, diverged_checkpoint


def test_eval_py_on_the_best_checkpoint_gives_the_runs_test_numbers(glyph_run: Path, tmp_path: Path) -> None:
    result = run_script("eval.py", f"ckpt_path={best_checkpoint(glyph_run)}", f"hydra.run.dir={tmp_path}", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((tmp_path / EVAL_FILE).read_text())
    reported = json.loads((glyph_run / "result.json").read_text())
    assert evaluated["test/acc"] == reported["test/acc"]  # the same images, counted the same: equal, not close
    assert evaluated["test/loss"] == pytest.approx(reported["test/loss"], rel=1e-6)
    assert evaluated["per_class_acc"] == reported["per_class_acc"]
    assert evaluated["confusion_matrix"] == reported["confusion_matrix"]
    assert evaluated["images"] == sum(map(sum, reported["confusion_matrix"]))
    assert evaluated["precision"] == reported["precision"]  # the run's own, read from its result.json
    assert f"test/acc={reported['test/acc']:.4f}" in result.stdout and "confusion matrix" in result.stdout
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000 and (tmp_path / "misclassified.png").is_file()


def test_split_val_is_the_runs_own_validation_split(glyph_run: Path, tmp_path: Path) -> None:
    """The validation split comes from the run's data.val_size and data.split_seed (its .hydra/config.yaml):
    the best checkpoint's val/acc is the run's best_val/acc."""
    result = evaluate(tool_cfg("eval", f"ckpt_path={best_checkpoint(glyph_run)}", "split=val", output_dir=tmp_path))
    reported = json.loads((glyph_run / "result.json").read_text())
    assert result["val/acc"] == pytest.approx(reported["best_val/acc"], abs=1e-7)
    assert result["images"] == result["data"]["val_size"] == 200 and result["data"]["split_seed"] == 0
    assert json.loads((tmp_path / EVAL_FILE).read_text()) == result


def test_a_diverged_networks_nan_loss_is_written_as_null_in_strict_json(glyph_run: Path, tmp_path: Path) -> None:
    diverged_checkpoint(glyph_run, tmp_path / "diverged.ckpt")
    result = evaluate(tool_cfg("eval", f"ckpt_path={tmp_path / 'diverged.ckpt'}", output_dir=tmp_path / "out"))
    assert result["test/loss"] != result["test/loss"]  # NaN, as the terminal line prints it

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    written = json.loads((tmp_path / "out" / EVAL_FILE).read_text(), parse_constant=refuse)
    assert written["test/loss"] is None and written["images"] == result["images"]


def write_checkpoint(path: Path, checkpoint: dict) -> Path:
    torch.save(checkpoint, path)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: write_bytes(d / "empty.ckpt", b""), "is empty (0 bytes)"),
        (lambda d: write_bytes(d / "notes.ckpt", b"hello\n"), "is a text file, not a checkpoint"),
        (lambda d: d, "is a folder, not a checkpoint file"),
        (
            lambda d: write_checkpoint(d / "other.ckpt", {"state_dict": {}, "epoch": 0, "global_step": 0}),
            "is a Lightning checkpoint but not one of train.py",
        ),
    ],
    ids=["missing", "empty", "text", "folder", "not-train.py"],
)
def test_what_is_no_checkpoint_of_train_py_is_one_line(tmp_path: Path, make, words: str) -> None:
    path = make(tmp_path)
    with pytest.raises(UserError) as refused:
        evaluate(tool_cfg("eval", f"ckpt_path={path}", output_dir=tmp_path / "out"))
    message = str(refused.value)
    assert message.startswith(f"ckpt_path={path} ") and words in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda options: options["model"].update(name="resnet"), "trained with model=resnet, which this version"),
        (lambda options: options["model"].update(depth=50), "trained with model.depth, an option this version"),
        (lambda options: options["model"].update(hidden_size=64), "holds weights that do not fit the cnn-none"),
    ],
    ids=["unknown-model", "unknown-option", "weights-do-not-fit"],
)
def test_a_checkpoint_of_another_version_is_one_line(glyph_run: Path, tmp_path: Path, change, words: str) -> None:
    checkpoint = torch.load(best_checkpoint(glyph_run), weights_only=True)
    change(checkpoint["hyper_parameters"])
    path = write_checkpoint(tmp_path / "other-version.ckpt", checkpoint)
    with pytest.raises(UserError) as refused:
        evaluate(tool_cfg("eval", f"ckpt_path={path}", output_dir=tmp_path / "out"))
    assert words in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_the_command_line_is_checked_before_anything_loads(tmp_path: Path) -> None:
    for arguments, expected in [
        ([], "error: ckpt_path is required: python eval.py ckpt_path=outputs/runs/<run>/checkpoints/"),
        (["ckpt_path=x.ckpt", "split=train"], "error: split must be test or val, got 'train'"),
        (["ckpt_path=x.ckpt", "data.val_size=0"], "error: data.val_size must be a positive integer, got 0"),
        (["ckpt_path=x.ckpt", "data.valsize=5"], "error: data.valsize is not an option of eval.py's data"),
        (["ckpt_path=a.ckpt,b.ckpt"], "error: eval.py runs once"),
    ]:
        result = run_script("eval.py", *arguments, f"hydra.run.dir={tmp_path}", cwd=ROOT)
        assert result.returncode == 1 and result.stderr.startswith(expected), (arguments, result.stderr)
        assert result.stderr.count("\n") == 1


def test_an_unwritable_folder_or_a_trainer_option_lightning_refuses_is_one_line(
    glyph_run: Path, tmp_path: Path
) -> None:
    checkpoint = f"ckpt_path={best_checkpoint(glyph_run)}"
    result = run_script("eval.py", checkpoint, "hydra.run.dir=/proc/eval", cwd=ROOT)
    assert result.returncode == 1 and result.stderr.startswith("error: hydra.run.dir=/proc/eval cannot be written")
    cfg = tool_cfg("eval", checkpoint, "trainer.precision=bogus", output_dir=tmp_path)
    with pytest.raises(UserError, match=r"^Lightning refuses this configuration: Precision 'bogus'"):
        evaluate(cfg)


def test_a_checkpoint_refused_inside_the_job_leaves_no_folder(tmp_path: Path) -> None:
    result = run_script("eval.py", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=ROOT)
    assert result.returncode == 1 and result.stderr.startswith(f"error: ckpt_path={tmp_path / 'nope.ckpt'} does not")
    assert not (tmp_path / "run").exists()
