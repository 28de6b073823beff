"""python -m tools.screenshots: TensorBoard's pages through headless Chromium. Where Chromium is missing (CI)
only the checks made before anything starts run: no TensorBoard, no browser."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tools import screenshots


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"started a process: {args[0] if args else kwargs}")

    monkeypatch.setattr(screenshots.subprocess, "Popen", refuse)


def test_without_chromium_one_line_and_nothing_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: None, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(screenshots, "find_browser", lambda: None)
    assert screenshots.main([str(tmp_path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no Chromium on PATH") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_without_event_files_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_starts: None, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(screenshots, "find_browser", lambda: "/usr/bin/chromium")
    assert screenshots.main([str(tmp_path / "missing")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert screenshots.main([str(tmp_path)]) == 1
    assert "holds no TensorBoard event file" in capsys.readouterr().err


def test_expected_runs_are_tensorboards_run_names(tmp_path: Path) -> None:
    for name in ("events.out.tfevents.1", "a/b/events.out.tfevents.2", "a/b/events.out.tfevents.3", "c/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert screenshots.expected_runs(tmp_path) == {".", "a/b"}


def write_small_sweep(logdir: Path) -> None:
    """Two runs with what a training run writes for these pages: scalars per epoch, the custom-scalars layout and
    the HPARAMS experiment and session."""
    from tensorboard.plugins.hparams import summary_v2 as hp
    from torch.utils.tensorboard import SummaryWriter

    from mnist_study.training.tensorboard import comparison_layout, comparison_tag

    for model, offset in (("mlp", 0.0), ("cnn", 0.05)):
        with SummaryWriter(logdir / f"model={model}") as writer:
            writer.add_custom_scalars(comparison_layout(f"model={model}", model, "none"))
            config = hp.hparams_config_pb(hparams=[hp.HParam("model")], metrics=[hp.Metric("val/acc")])
            writer.file_writer.add_summary(config)
            writer.file_writer.add_summary(hp.hparams_pb({"model": model}, trial_id=model))
            for epoch, metric in ((epoch, metric) for epoch in range(3) for metric in ("acc", "loss")):
                tags = [f"{stage}/{metric}" for stage in ("train", "val")]
                tags += [f"val_by_model/{model}/{metric}", f"val_by_regularizer/none/{metric}"]
                tags += [comparison_tag(f"model={model}", stage, metric) for stage in ("train", "val")]
                for tag in tags:  # every chart of the layout has its lines, as after a real run
                    writer.add_scalar(tag, 0.8 + offset + 0.05 * epoch, epoch + 1)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # a browser and TensorBoard on 2 cores: its 60 s drawing timeout is too tight under load
@pytest.mark.skipif(screenshots.find_browser() is None, reason="needs chromium on PATH (CI has none)")
def test_screenshots_of_a_small_sweep(tmp_path: Path) -> None:
    write_small_sweep(tmp_path / "logs")
    saved, problems = screenshots.take_screenshots(tmp_path / "logs", tmp_path / "shots", width=1000, height=700)
    assert problems == []  # every page drew its charts (or, HParams, its table and parallel-coordinates lines)
    assert [path.name for path in saved] == [name for name, *_ in screenshots.PAGES]
    for path in saved:
        assert png_size(path) == (1000, 700)
        assert path.stat().st_size > 5_000
