"""export.py: the exported network computes the checkpoint's numbers, for any batch size, checked before the file
is written; ONNX with onnxruntime (skipped where it is not installed)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_study.data import mnist_files
from mnist_study.data.datamodule import normalize
from mnist_study.errors import UserError
from mnist_study.inference import export as exporting
from mnist_study.inference.checkpoints import load_trained

from .conftest import ROOT, run_script
from .helpers.configs import tool_cfg
from .helpers.trained import best_checkpoint, diverged_checkpoint

HAS_ONNXRUNTIME = all(importlib.util.find_spec(name) for name in exporting.ONNX_PACKAGES)


def glyph_test_images(run: Path, count: int) -> torch.Tensor:
    images, _ = mnist_files.load_split(mnist_files.raw_dir(run.parent / "data"), train=False)
    return normalize(torch.from_numpy(images[:count].copy()))


def checkpoint_logits(run: Path, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return load_trained(best_checkpoint(run)).classifier(images).numpy()


@pytest.mark.skipif(not HAS_ONNXRUNTIME, reason="needs the export extra: pip install -e '.[export]'")
def test_onnx_export_equals_the_checkpoint_in_onnxruntime_for_any_batch_size(glyph_run: Path, tmp_path: Path) -> None:
    import onnxruntime

    cfg = tool_cfg("export", f"ckpt_path={best_checkpoint(glyph_run)}", "format=onnx", output_dir=tmp_path)
    result = exporting.export(cfg)
    assert result["path"] == str(tmp_path / "cnn-none.onnx") and result["probability"] <= 1e-5
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    [images_input] = session.get_inputs()
    assert images_input.name == "images" and not isinstance(images_input.shape[0], int)  # a named, dynamic axis
    images = glyph_test_images(glyph_run, 50)
    for size in (1, 3, 50):
        [logits] = session.run(None, {"images": images[:size].numpy()})
        np.testing.assert_allclose(logits, checkpoint_logits(glyph_run, images[:size]), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_equals_the_checkpoint_for_any_batch_size(glyph_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "model.pt"
    cfg = tool_cfg("export", f"ckpt_path={best_checkpoint(glyph_run)}", "format=torchscript", f"output={output}",
                   output_dir=tmp_path / "out")  # fmt: skip
    exporting.export(cfg)
    loaded = torch.jit.load(str(output))
    images = glyph_test_images(glyph_run, 50)
    for size in (1, 3, 50):
        with torch.inference_mode():
            logits = loaded(images[:size]).numpy()
        np.testing.assert_allclose(logits, checkpoint_logits(glyph_run, images[:size]), rtol=1e-5, atol=1e-5)


def test_an_export_that_computes_other_numbers_is_not_written(
    glyph_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = exporting.torchscript_runner
    monkeypatch.setattr(exporting, "torchscript_runner", lambda data: lambda images: runner(data)(images) + 1e-3)
    cfg = tool_cfg("export", f"ckpt_path={best_checkpoint(glyph_run)}", "format=torchscript", output_dir=tmp_path)
    with pytest.raises(exporting.ExportMismatch, match="nothing was written"):
        exporting.export(cfg)
    assert not list(tmp_path.iterdir())


def test_without_onnxruntime_format_onnx_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    cfg = tool_cfg("export", "ckpt_path=any.ckpt", "format=onnx", output_dir=tmp_path)
    with pytest.raises(UserError) as refused:
        exporting.export(cfg)
    message = str(refused.value)
    assert message.startswith("format=onnx needs onnxruntime") and "pip install -e '.[export]'" in message
    assert "\n" not in message


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_py_writes_the_file_and_says_how_close_it_is(glyph_run: Path, tmp_path: Path) -> None:
    checkpoint = best_checkpoint(glyph_run)
    result = run_script("export.py", f"ckpt_path={checkpoint}", "format=torchscript", f"hydra.run.dir={tmp_path}",
                        cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"torchscript: {tmp_path / 'cnn-none.pt'}" in result.stdout and "max |difference|" in result.stdout
    assert torch.jit.load(io.BytesIO((tmp_path / "cnn-none.pt").read_bytes())) is not None
    result = run_script("export.py", f"ckpt_path={checkpoint}", "format=tflite", cwd=ROOT)
    assert result.stderr == "error: format must be onnx or torchscript, got 'tflite'\n"


@pytest.mark.parametrize(
    ("output", "words"),
    [("checkpoint", "must be a file name ending in .onnx"), ("picture.jpg", "must be a file name ending in .onnx"),
     ("a-folder.onnx", "is a folder"), ("/proc/x.onnx", "output=/proc/x.onnx cannot be written")],
)  # fmt: skip
def test_an_output_that_is_not_an_export_file_is_refused_and_left_as_it_was(
    glyph_run: Path, tmp_path: Path, output: str, words: str
) -> None:
    checkpoint = best_checkpoint(glyph_run)
    target = {"checkpoint": checkpoint}.get(output, tmp_path / output if not output.startswith("/") else Path(output))
    if output == "picture.jpg":
        target.write_bytes(b"a user's picture")
    if output == "a-folder.onnx":
        target.mkdir()
    before = target.read_bytes() if target.is_file() else None
    cfg = tool_cfg("export", f"ckpt_path={checkpoint}", f"output={target}", output_dir=tmp_path / "run")
    with pytest.raises(UserError, match=words):
        exporting.export(cfg)
    assert before is None or target.read_bytes() == before


def test_a_checkpoint_with_nan_weights_is_not_exported(glyph_run: Path, tmp_path: Path) -> None:
    diverged_checkpoint(glyph_run, tmp_path / "diverged.ckpt")
    cfg = tool_cfg("export", f"ckpt_path={tmp_path / 'diverged.ckpt'}", "format=torchscript", output_dir=tmp_path / "o")
    with pytest.raises(UserError, match="NaN or infinite logits"):
        exporting.export(cfg)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not HAS_ONNXRUNTIME, reason="needs the export extra: pip install -e '.[export]'")
def test_an_opset_the_exporter_cannot_write_is_one_line_and_nothing_is_written(glyph_run: Path, tmp_path: Path) -> None:
    cfg = tool_cfg("export", f"ckpt_path={best_checkpoint(glyph_run)}", "opset=999", output_dir=tmp_path)
    with pytest.raises(UserError, match=r"opset=999: torch's ONNX exporter could not convert"):
        exporting.export(cfg)
    assert not list(tmp_path.iterdir())
