"""Fixtures: a small synthetic MNIST written in the real IDX layout, and configs composed like train.py's."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from mnist_study.data import mnist_files

from .helpers.processes import child_environment, start_python

if "PYTEST_XDIST_WORKER" in os.environ:  # the suite runs on `-n auto` workers, one per core: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in the test subprocesses

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TRAIN_SIZE, TEST_SIZE, VAL_SIZE = 600, 200, 100


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 'digits': class k lights up a 7x7 block at a position of its own, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 2 + 7 * row : 9 + 7 * row, 1 + 7 * col : 8 + 7 * col] = 255
    return images, labels


def write_synthetic_mnist(data_dir: Path) -> dict[str, str]:
    """Write the four IDX files; returns their MD5s (what `data.checksums` must say for them)."""
    directory = mnist_files.raw_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_digits(TRAIN_SIZE, seed=1)
    test_x, test_y = synthetic_digits(TEST_SIZE, seed=2)
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    checksums = {}
    for key, array in arrays.items():
        data = mnist_files.encode_idx(array)
        (directory / mnist_files.FILES[key]).write_bytes(data)
        checksums[key] = hashlib.md5(data).hexdigest()
    return checksums


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, write_synthetic_mnist(data_dir)


def data_overrides(data_dir: Path, checksums: dict[str, str]) -> list[str]:
    """Command-line overrides that point train.py at the synthetic set, small and fast."""
    sums = ",".join(f"{key}:'{value}'" for key, value in checksums.items())
    return [
        f"data.data_dir={data_dir}",
        f"data.checksums={{{sums}}}",
        "data.download=false",
        f"data.val_size={VAL_SIZE}",
        "data.batch_size=50",
        "data.eval_batch_size=100",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",  # the same arithmetic on every machine; bf16 is tested where asked for
        "trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false",
    ]


@pytest.fixture
def make_cfg(synthetic_mnist: tuple[Path, dict[str, str]], tmp_path: Path):
    """compose() the train config as train.py would, with the synthetic data and an output dir in tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        data_dir, checksums = synthetic_mnist
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[*data_overrides(data_dir, checksums), *overrides])
        with open_dict(cfg):
            cfg.output_dir = str(output_dir or tmp_path / "run")
        return cfg

    return make


@pytest.fixture
def add_callback(monkeypatch: pytest.MonkeyPatch):
    """Make train() append a callback to the Trainer it builds (undone by monkeypatch.undo())."""
    from mnist_study.training import pipeline as training

    def install(callback) -> None:
        build = training.build_trainer

        def build_with_callback(cfg, output_dir, network=None):
            trainer = build(cfg, output_dir, network)
            trainer.callbacks.append(callback)
            return trainer

        monkeypatch.setattr(training, "build_trainer", build_with_callback)

    return install


def run_script(
    *args: str, cwd: Path, timeout: int = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """This Python running `args` in `cwd`, with this environment plus `env` (tests/helpers/processes.py)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull) as nothing:
        process = start_python(list(args), cwd, child_environment(env), nothing.fileno(), out.fileno(), err.fileno())
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess([sys.executable, *args], code, text_of(out), text_of(err))


def text_of(file: IO[bytes]) -> str:
    """What a process wrote, read as subprocess.run(text=True) reads it (universal newlines)."""
    file.seek(0)
    return file.read().decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `build` once per test session. Under pytest-xdist the workers share it: the
    first to ask builds it, holding a lock, and the others wait and reuse it (pytest-xdist's recipe for a
    session fixture that must run once; its `--dist loadgroup` does not work with pytest 9.2)."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the workers' base folders lie side by side in it
    folder, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():  # a build that failed in another worker is tried again here
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def sweep(synthetic_mnist: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small real sweep (`train.py -m`: 2 models x 2 regularizers, 2 epochs) for every test that reads one;
    tests that change it work on a copy."""

    def run_sweep(sweep_dir: Path) -> None:
        result = run_script(
            "train.py", "-m", *data_overrides(*synthetic_mnist), "model=softmax,mlp", "regularizer=none,bn",
            "trainer.max_epochs=2", f"hydra.sweep.dir={sweep_dir}", cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    return built_once(tmp_path_factory, "train-sweep", run_sweep)


@pytest.fixture(scope="session")
def csv_sweep(synthetic_mnist: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `sweep` fixture's sweep again with logger=csv: no TensorBoard at all."""

    def run_sweep(sweep_dir: Path) -> None:
        result = run_script(
            "train.py", "-m", *data_overrides(*synthetic_mnist), "model=softmax,mlp", "regularizer=none,bn",
            "trainer.max_epochs=2", "logger=csv", f"hydra.sweep.dir={sweep_dir}", cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    return built_once(tmp_path_factory, "train-sweep-csv", run_sweep)


@pytest.fixture(scope="session")
def glyph_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a small CNN that `train.py` trained on the glyph set (tests/helpers/glyphs.py: digits whose
    class is their shape), built once per session: checkpoints/, .hydra/config.yaml and result.json. The set's IDX
    files are in the folder `data` beside it."""
    from .helpers.glyphs import VAL_SIZE, write_glyph_mnist

    def train_on_glyphs(folder: Path) -> None:
        checksums = write_glyph_mnist(folder / "data")
        result = run_script(
            "train.py", *data_overrides(folder / "data", checksums), f"data.val_size={VAL_SIZE}", "model=cnn",
            "model.channels=[8,16]", "model.hidden_size=32", "trainer.max_epochs=4", f"hydra.run.dir={folder / 'run'}",
            cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    return built_once(tmp_path_factory, "glyph-run", train_on_glyphs) / "run"


def compose_train(synthetic_mnist: tuple[Path, dict[str, str]], *overrides: str, output_dir: Path) -> DictConfig:
    """compose() the train config as train.py would, on the synthetic set, writing into `output_dir` (for fixtures
    wider than one test, where make_cfg's tmp_path is not at hand)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*data_overrides(*synthetic_mnist), *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)
    return cfg


def refused_in_one_line(
    task: Callable[[DictConfig], object], cfg: DictConfig, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run `task` as train.py runs it (runs.ending.run_task): it must exit with code 1 and one line on stderr,
    `error: ...`, which is returned."""
    from mnist_study.runs.ending import run_task

    with pytest.raises(SystemExit) as exit_info:
        run_task(task, cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: compare two snapshots to see that nothing was written."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
