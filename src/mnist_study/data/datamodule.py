"""MNIST held as normalized tensors in memory (on the training device) and served by indexing.

A per-sample Dataset + DataLoader spends more time building batches than a small network spends
training on them; slicing one tensor costs one gather per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mnist_study.data import mnist_files
from mnist_study.errors import UserError

MEAN, STD = 0.1307, 0.3081


class EpochShuffle:
    """A seeded permutation per epoch, sharded by rank: the order depends only on (seed, epoch), so a resumed run
    sees exactly the batches an uninterrupted one would. Each rank takes every world_size-th index of the same
    permutation, padded like DistributedSampler so all ranks run the same number of steps."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def indices(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        padded = len(self) * self.world_size
        if padded > self.size:
            order = torch.cat([order, order[: padded - self.size]])
        return order[self.rank :: self.world_size]


class TensorBatches:
    """An iterable of (images, labels) batches of one split ("train", "val", "test"), cut from two tensors; when
    given a shuffle, each pass takes the permutation of the epoch that `epoch()` returns at its start."""

    def __init__(
        self,
        split: str,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: EpochShuffle | None = None,
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        self.split, self.images, self.labels, self.batch_size = split, images, labels, batch_size
        self.shuffle, self.epoch = shuffle, epoch

    def __len__(self) -> int:
        count = len(self.shuffle) if self.shuffle is not None else len(self.labels)
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.shuffle is None:
            for start in range(0, len(self.labels), self.batch_size):
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            return
        order = self.shuffle.indices(self.epoch()).to(self.labels.device)
        for batch in order.split(self.batch_size):
            yield self.images[batch], self.labels[batch]


def normalize(images: Tensor) -> Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) with MNIST's mean and std; in place after one copy."""
    return images.float().div_(255.0).sub_(MEAN).div_(STD).unsqueeze(1)


class MNISTDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        on_device: bool = True,
        download: bool = True,
        test_every_epoch: bool = False,
        checksums: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.shuffle_seed = val_size, split_seed, shuffle_seed
        self.on_device, self.download, self.test_every_epoch = on_device, download, test_every_epoch
        # Refused here, before any training setup, rather than at the first read of the data.
        self.checksums = None if checksums is None else mnist_files.checked_checksums(checksums)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._verified: Path | None = None

    def prepare_data(self) -> None:
        self._verified = mnist_files.ensure_mnist(self.data_dir, self.checksums, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        # Other ranks (and callers that skip prepare_data) verify here; rank 0 already did.
        directory = self._verified or mnist_files.ensure_mnist(self.data_dir, self.checksums, self.download)
        train_x, train_y = mnist_files.load_split(directory, train=True)
        test_x, test_y = mnist_files.load_split(directory, train=False)
        if self.val_size >= len(train_y):
            raise UserError(
                f"data.val_size={self.val_size} leaves no training images (the training set has "
                f"{len(train_y)}): choose a value between 1 and {len(train_y) - 1}"
            )
        device = self._device()
        images, labels = normalize(torch.from_numpy(train_x.copy())), torch.from_numpy(train_y.astype("int64"))
        split = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
        train_idx, val_idx = split[: -self.val_size], split[-self.val_size :]
        self.splits = {
            "train": (images[train_idx].to(device), labels[train_idx].to(device)),
            "val": (images[val_idx].to(device), labels[val_idx].to(device)),
            "test": (
                normalize(torch.from_numpy(test_x.copy())).to(device),
                torch.from_numpy(test_y.astype("int64")).to(device),
            ),
        }

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        images, labels = batch
        if images.device == device:  # kept on the training device already (on_device): nothing to move
            return batch
        return images.to(device), labels.to(device)

    def _device(self) -> torch.device:
        if self.on_device and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def eval_dataloader(self, split: str) -> TensorBatches:
        """The batches of one split ("val" or "test") in their order, as validation and test read them."""
        images, labels = self.splits[split]
        rank, world_size = self._rank()
        # Evaluation shards are disjoint and unpadded, so the synced metrics count every image once.
        return TensorBatches(split, images[rank::world_size], labels[rank::world_size], self.eval_batch_size)

    def train_dataloader(self, epoch: int | None = None) -> TensorBatches:
        """Shuffled anew each epoch: by the trainer's current epoch at the start of each pass (a resumed run
        included), or by `epoch` for a loop without a Trainer."""
        images, labels = self.splits["train"]
        rank, world_size = self._rank()
        shuffle: EpochShuffle | None = EpochShuffle(len(labels), self.shuffle_seed, rank, world_size)
        if self.trainer is not None and self.trainer.overfit_batches:  # the same first batches every epoch
            images, labels, shuffle = images[rank::world_size], labels[rank::world_size], None
        return TensorBatches("train", images, labels, self.batch_size, shuffle, self._epoch_source(epoch))

    def _epoch_source(self, epoch: int | None) -> Callable[[], int]:
        if epoch is not None:
            return lambda: epoch
        trainer = self.trainer
        return (lambda: trainer.current_epoch) if trainer is not None else (lambda: 0)

    def val_dataloader(self) -> TensorBatches | list[TensorBatches]:
        if self.test_every_epoch:
            return [self.eval_dataloader("val"), self.eval_dataloader("test")]
        return self.eval_dataloader("val")

    def test_dataloader(self) -> TensorBatches:
        return self.eval_dataloader("test")
