"""AtomicCheckpointIO: whole checkpoints or the previous one, never half of one; check_loadable: one line."""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import signal
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mnist_study.atomic_files import DiskFull, open_for_writing, remove_orphaned_temp_files
from mnist_study.errors import UserError
from mnist_study.training.checkpoint_io import (
    AtomicCheckpointIO,
    RunFolderCheckpoint,
    UnreadableCheckpoint,
    check_loadable,
)

from .conftest import run_script


class TinyModule(L.LightningModule):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(width, 2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_data() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 4, generator=generator), torch.arange(16) % 2), batch_size=8)


def fit(folder: Path, plugin: AtomicCheckpointIO, max_epochs: int, ckpt_path: Path | None = None) -> TinyModule:
    model = TinyModule()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        plugins=[plugin],
        callbacks=[ModelCheckpoint(dirpath=folder, save_last=True)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder.parent,
    )
    trainer.fit(model, tiny_data(), ckpt_path=ckpt_path)
    return model


def lightning_like(epoch: int) -> dict[str, Any]:
    return {"state_dict": {"w": torch.full((3,), float(epoch))}, "epoch": epoch, "global_step": 2 * epoch}


def serialized(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


class RecordingOpener:
    """Opens like the plugin's default and records which temp files it opened."""

    def __init__(self) -> None:
        self.opened: list[Path] = []

    def __call__(self, path: Path) -> BinaryIO:
        self.opened.append(path)
        return open_for_writing(path)


class DiskFillsUp:
    """A real file on which the disk fills after `capacity` bytes: that much is written, then ENOSPC."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 (closed by __exit__, like the file it stands in for)
        self.capacity = capacity
        self.attempted = 0

    def write(self, data: bytes | memoryview) -> int:
        self.attempted += len(data)
        self.file.write(bytes(data[: self.capacity]))
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()

    def __enter__(self) -> DiskFillsUp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()


# --- saving through a real Trainer -----------------------------------------------------------------------


def test_fit_saves_loadable_checkpoints_through_the_plugin_and_leaves_no_temp_file(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    opener = RecordingOpener()
    model = fit(folder, AtomicCheckpointIO(opener), max_epochs=1)

    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    pid = os.getpid()
    targets = [re.fullmatch(rf"\.(.+)\.tmp-{pid}-[0-9a-f]{{8}}", p.name) for p in opener.opened]
    assert [found and found.group(1) for found in targets] == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert all(p.parent == folder for p in opener.opened), "temp files are written in the checkpoint's own folder"
    for path in folder.iterdir():
        check_loadable(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["epoch"] == 0 and checkpoint["hyper_parameters"] == {"width": 4}
        torch.testing.assert_close(checkpoint["state_dict"]["layer.weight"], model.layer.weight.detach())

    resumed = fit(folder, AtomicCheckpointIO(), max_epochs=2, ckpt_path=folder / "last.ckpt")
    assert resumed.trainer.current_epoch == 2
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_disk_full_during_fit_keeps_the_previous_last_ckpt_and_names_folder_and_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    full_disk: list[DiskFillsUp] = []
    before: dict[str, bytes] = {}

    def opener(path: Path) -> BinaryIO:
        if path.name.startswith(".last.ckpt.") and (folder / "last.ckpt").exists():  # epoch 1's last.ckpt
            before["last.ckpt"] = (folder / "last.ckpt").read_bytes()
            full_disk.append(DiskFillsUp(path, capacity=100))
            return full_disk[-1]
        return open_for_writing(path)

    with pytest.raises(DiskFull) as error:
        fit(folder, AtomicCheckpointIO(opener), max_epochs=2)

    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"no space left in {folder} to save last.ckpt")
    assert f"it needs {full_disk[0].attempted} bytes" in message and full_disk[0].attempted > 100
    assert (folder / "last.ckpt").read_bytes() == before["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


# --- the plugin's failure paths ------------------------------------------------------------------------------


def fsync_fills_the_disk(fd: int) -> None:  # NFS reports a full disk at fsync or close, not at write
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_leaves_the_previous_checkpoint_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(lightning_like(0), target)
    previous = target.read_bytes()
    if where == "write":
        plugin = AtomicCheckpointIO(lambda path: DiskFillsUp(path, capacity=10))
    else:
        plugin = AtomicCheckpointIO()
        monkeypatch.setattr(os, "fsync", fsync_fills_the_disk)

    with pytest.raises(DiskFull) as error:
        plugin.save_checkpoint(lightning_like(1), target)

    needed = len(serialized(lightning_like(1)))
    assert re.fullmatch(
        rf"no space left in {re.escape(str(tmp_path))} to save last\.ckpt \(No space left on device\): "
        rf"it needs {needed} bytes, \d+ bytes free; the previous last\.ckpt is intact\. .*",
        str(error.value),
    )
    assert isinstance(error.value, UserError) and len(str(error.value).splitlines()) == 1
    assert target.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_other_failures_remove_the_temp_file_and_keep_their_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(lightning_like(0), target)
    previous = target.read_bytes()

    def rename_fails(source: object, destination: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "replace", rename_fails)
    with pytest.raises(OSError) as error:
        AtomicCheckpointIO().save_checkpoint(lightning_like(1), target)
    assert error.value.errno == errno.EIO and not isinstance(error.value, UserError)
    monkeypatch.undo()

    class Interrupted(io.BytesIO):
        def write(self, data: object) -> int:
            raise KeyboardInterrupt

    def interrupted(path: Path) -> BinaryIO:
        path.write_bytes(b"partial")
        return Interrupted()

    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO(interrupted).save_checkpoint(lightning_like(1), target)

    assert target.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_save_replaces_the_file_and_creates_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "last.ckpt"
    for epoch in (0, 1):
        AtomicCheckpointIO().save_checkpoint(lightning_like(epoch), target)
        assert target.read_bytes() == serialized(lightning_like(epoch))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_file_urls_and_remote_paths(tmp_path: Path) -> None:
    AtomicCheckpointIO().save_checkpoint(lightning_like(0), f"file://{tmp_path}/last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == serialized(lightning_like(0))
    memory, remote = fsspec.filesystem("memory"), f"/{tmp_path.name}/last.ckpt"  # memory:// is process-wide
    AtomicCheckpointIO().save_checkpoint(lightning_like(1), f"memory://{remote}")  # saved as by TorchCheckpointIO
    assert memory.cat(remote) == serialized(lightning_like(1))
    memory.rm(remote)


def test_storage_options_are_refused_as_by_torch_checkpoint_io(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint(lightning_like(0), tmp_path / "last.ckpt", storage_options={})


# --- a save killed between write and rename ---------------------------------------------------------------

KILLED_SAVE = """
import os, signal, sys
import torch
from mnist_study.training.checkpoint_io import AtomicCheckpointIO

def checkpoint(epoch):
    return {"state_dict": {"w": torch.full((3,), float(epoch))}, "epoch": epoch, "global_step": 2 * epoch}

target = sys.argv[1]
plugin = AtomicCheckpointIO()
plugin.save_checkpoint(checkpoint(0), target)
print(os.getpid(), flush=True)
os.replace = lambda source, destination: os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename
plugin.save_checkpoint(checkpoint(1), target)
print("not killed", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_save_killed_before_its_rename_keeps_the_previous_checkpoint_and_the_sweep_removes_the_orphan(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "checkpoints"
    script = tmp_path / "killed_save.py"
    script.write_text(KILLED_SAVE)

    result = run_script(str(script), str(folder / "last.ckpt"), cwd=tmp_path)

    assert result.returncode == -signal.SIGKILL, result.stderr
    (pid,) = result.stdout.split()
    assert (folder / "last.ckpt").read_bytes() == serialized(lightning_like(0))
    check_loadable(folder / "last.ckpt")
    (orphan,) = folder.glob(f".last.ckpt.tmp-{pid}-*")
    assert orphan.read_bytes() == serialized(lightning_like(1)), "killed after the write, before the rename"

    assert remove_orphaned_temp_files(folder) == [orphan]
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    assert remove_orphaned_temp_files(folder) == []


def test_the_sweep_removes_only_this_plugins_temp_files(tmp_path: Path) -> None:
    names = ["last.ckpt", "notes.tmp-12", ".last.ckpt.tmp-abc", ".last.ckpt.tmp-", ".hidden"]
    for name in names:
        (tmp_path / name).write_bytes(b"keep")
    (tmp_path / ".folder.tmp-5").mkdir()
    orphans = [tmp_path / ".epoch=0-step=2.ckpt.tmp-77-0a1b2c3d", tmp_path / ".last.ckpt.tmp-123"]
    for orphan in orphans:
        orphan.write_bytes(b"orphan")

    assert remove_orphaned_temp_files(tmp_path) == sorted(orphans)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, ".folder.tmp-5"])
    assert remove_orphaned_temp_files(tmp_path / "missing") == []


# --- check_loadable: one line per way a file is not a checkpoint -------------------------------------------


class NotAllowed:
    pass


def write_text(path: Path) -> None:
    path.write_text("epoch: 3\nstate_dict: weights\n")


def write_truncated(path: Path) -> None:
    path.write_bytes(serialized(lightning_like(0))[:700])


def write_plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(lightning_like(0)))


def write_state_dict_only(path: Path) -> None:
    torch.save(nn.Linear(2, 2).state_dict(), path)


def write_tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def write_foreign_object(path: Path) -> None:
    torch.save({**lightning_like(0), "extra": NotAllowed()}, path)


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_binary(path: Path) -> None:
    path.write_bytes(bytes(range(256)))


def write_folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (write_text, "is a text file, not a checkpoint"),
        (write_truncated, "is truncated (700 bytes, the end of its zip archive is missing): its save was cut short"),
        (write_plain_pickle, "is a plain pickle (or a torch file older than 1.6), not a checkpoint"),
        (write_state_dict_only, "is a torch file but not a Lightning checkpoint: it has no state_dict, epoch, "
                                "global_step (it holds weight, bias)"),
        (write_tensor, "holds a Tensor, not a Lightning checkpoint"),
        (write_foreign_object, "holds objects that torch.load(weights_only=True) refuses (Unsupported global: "
                               "GLOBAL tests.test_checkpoint_io.NotAllowed"),
        (write_empty, "is empty (0 bytes): its save was cut short"),
        (write_binary, "is not a checkpoint (not a zip archive; it starts with b'\\x00\\x01"),
        (write_folder, "is a folder, not a checkpoint file"),
        (lambda path: None, "does not exist"),
    ],
)  # fmt: skip
def test_check_loadable_says_in_one_line_what_is_wrong(tmp_path: Path, write, problem: str) -> None:
    path = tmp_path / "last.ckpt"
    write(path)
    with pytest.raises(UnreadableCheckpoint) as error:
        check_loadable(path)
    message = str(error.value)
    assert isinstance(error.value, UserError)
    assert message.startswith(f"{path} {problem}"), message
    assert len(message.splitlines()) == 1 and "\x1b" not in message


def test_check_loadable_accepts_a_lightning_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(lightning_like(3), path)
    assert check_loadable(path) is None
    assert check_loadable(str(path)) is None


@pytest.mark.parametrize("settings", [{"monitor": "val/acc", "mode": "max"}, {"monitor": None, "save_top_k": 1}])
def test_the_run_folder_checkpoint_keeps_its_state_under_lightnings_key(settings: dict[str, Any]) -> None:
    # The key a checkpoint file stores this callback's state under, as ModelCheckpoint makes it; two checkpoint
    # callbacks of one run keep two states.
    checkpoint = RunFolderCheckpoint(**settings)
    assert checkpoint.state_key == ModelCheckpoint.state_key.fget(checkpoint)  # type: ignore[attr-defined]
    best, last = RunFolderCheckpoint(monitor="val/acc", mode="max"), RunFolderCheckpoint(monitor=None)
    assert best.state_key != last.state_key
