from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mnist_study.data.datamodule import MEAN, STD, EpochShuffle, MNISTDataModule
from mnist_study.errors import UserError

from .conftest import TEST_SIZE, TRAIN_SIZE, VAL_SIZE


@pytest.fixture
def datamodule(synthetic_mnist: tuple[Path, dict[str, str]]) -> MNISTDataModule:
    data_dir, checksums = synthetic_mnist
    dm = MNISTDataModule(data_dir=str(data_dir), batch_size=64, eval_batch_size=50, val_size=VAL_SIZE,
                         checksums=checksums, download=False)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_split_sizes_and_batch_shapes(datamodule: MNISTDataModule) -> None:
    batches = list(datamodule.train_dataloader())
    assert len(batches) == len(datamodule.train_dataloader()) == -(-(TRAIN_SIZE - VAL_SIZE) // 64)
    images, labels = batches[0]
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert sum(len(y) for _, y in batches) == TRAIN_SIZE - VAL_SIZE
    assert sum(len(y) for _, y in datamodule.val_dataloader()) == VAL_SIZE
    assert sum(len(y) for _, y in datamodule.test_dataloader()) == TEST_SIZE


def test_normalization_maps_pixels_with_mnist_mean_and_std(datamodule: MNISTDataModule) -> None:
    images, _ = datamodule.splits["test"]
    assert images.min().item() == pytest.approx((0 - MEAN) / STD)
    assert images.max().item() == pytest.approx((1 - MEAN) / STD)


def test_train_and_val_are_disjoint_and_cover_the_training_set(datamodule: MNISTDataModule) -> None:
    train, val = datamodule.splits["train"][0], datamodule.splits["val"][0]
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([train, val])}
    assert len(rows) == TRAIN_SIZE  # synthetic images are distinct: no image in both splits


def test_shuffle_is_a_function_of_seed_and_epoch() -> None:
    shuffle = EpochShuffle(100, seed=7)
    first, second = shuffle.indices(0), shuffle.indices(1)
    assert not torch.equal(first, second)
    assert sorted(second.tolist()) == list(range(100))
    assert torch.equal(EpochShuffle(100, seed=7).indices(1), second)  # a resumed run: the same order
    assert not torch.equal(EpochShuffle(100, seed=8).indices(1), second)


def test_each_pass_over_the_training_set_takes_the_trainers_current_epoch(datamodule: MNISTDataModule) -> None:
    trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1, overfit_batches=0)
    datamodule.trainer = trainer  # type: ignore[assignment]
    loader = datamodule.train_dataloader()  # made once, as Lightning does; iterated every epoch
    labels = [torch.cat([y for _, y in loader])]
    trainer.current_epoch = 1
    labels.append(torch.cat([y for _, y in loader]))
    assert not torch.equal(labels[0], labels[1])
    assert torch.equal(labels[1], torch.cat([y for _, y in datamodule.train_dataloader(epoch=1)]))


def test_ranks_see_every_sample_once_per_epoch() -> None:
    shards = [EpochShuffle(10, seed=0, rank=r, world_size=2).indices(0) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


def test_val_size_that_leaves_no_training_images_names_the_range(synthetic_mnist: tuple[Path, dict[str, str]]) -> None:
    data_dir, checksums = synthetic_mnist
    dm = MNISTDataModule(data_dir=str(data_dir), val_size=TRAIN_SIZE, checksums=checksums, download=False)
    with pytest.raises(
        UserError,
        match=rf"^data.val_size={TRAIN_SIZE} leaves no training images .*between 1 and {TRAIN_SIZE - 1}$",
    ):
        dm.setup("fit")


def test_partial_checksums_are_refused_when_the_datamodule_is_built(
    synthetic_mnist: tuple[Path, dict[str, str]],
) -> None:
    data_dir, checksums = synthetic_mnist
    with pytest.raises(UserError, match=r"^data.checksums gives test_labels but not train_images, train_labels"):
        MNISTDataModule(data_dir=str(data_dir), checksums={"test_labels": checksums["test_labels"]}, download=False)
