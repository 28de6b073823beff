"""Epoch time of the project's training path (Lightning + Hydra config) against a raw PyTorch loop.

    python -m mnist_study.bench [--models softmax mlp cnn] [--regularizers none dropout bn]
        [--precisions auto 32-true bf16-mixed] [--epochs 4] [--train-batches N] [--rounds 1] [override ...]

Both sides train the same network with the same optimizer, schedule, batch size and device, on the same
tensor-resident data, and evaluate the validation split every epoch; the ratio is project / raw.
Overrides are train.py's (e.g. trainer=gpu, data.batch_size=512). The first epoch is warm-up and is left
out; the median of the rest is reported. Every model runs with every regularizer and precision given;
--train-batches cuts both sides' epochs to N training batches (for slow cases, e.g. bf16 on a CPU without it).
--rounds R runs the two sides R times each, taking turns (raw first in odd rounds): on a shared machine whose
speed drifts, the median of the per-round ratios (printed with its range) is the number to trust.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from mnist_study.callbacks import EpochTimer, synchronize
from mnist_study.datamodule import MNISTDataModule
from mnist_study.optim import build_optimizer
from mnist_study.precision import cpu_name
from mnist_study.training import build_classifier, build_datamodule, build_trainer
from mnist_study.upstream import skip_lightnings_nvml_check_without_gpus

CONF = Path(__file__).resolve().parents[2] / "conf"


def project_epochs(cfg: DictConfig) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(cfg, Path(out))
        timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))  # train.py's own timing
        L.seed_everything(cfg.seed, verbose=False)
        trainer.fit(build_classifier(cfg), datamodule=build_datamodule(cfg))
    return timer.epoch_seconds


def raw_epochs(cfg: DictConfig, datamodule: MNISTDataModule, device: torch.device, precision: str) -> list[float]:
    """The loop a careful person writes by hand: same network, optimizer, schedule, precision and data tensors,
    and the same per-epoch numbers train.py logs (training and validation loss and accuracy), on the device."""
    bf16 = precision.startswith("bf16")
    L.seed_everything(cfg.seed, verbose=False)
    classifier = build_classifier(cfg)
    classifier.configure_model()  # the same speed switches (channels_last, compile) as in training
    net = classifier.net.to(device)
    batches = train_batches(cfg, datamodule)
    total_steps = cfg.trainer.max_epochs * batches
    optimizer, scheduler = build_optimizer(net.parameters(), cfg.optimizer, cfg.scheduler, total_steps)
    seconds = []
    for epoch in range(cfg.trainer.max_epochs):
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        synchronize(device)
        start = time.perf_counter()
        net.train()
        train_loss, train_correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        for images, labels in itertools.islice(loader, batches):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # what bf16-mixed does
                logits = net(images)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            train_loss += loss.detach() * len(labels)
            train_correct += (logits.argmax(1) == labels).sum()
        net.eval()
        val_loss, val_correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for images, labels in datamodule.val_dataloader():  # type: ignore[union-attr]
                logits = net(images)
                val_loss += F.cross_entropy(logits, labels, reduction="sum")
                val_correct += (logits.argmax(1) == labels).sum()
        torch.stack((train_loss, train_correct, val_loss, val_correct)).tolist()  # what would be printed
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def train_batches(cfg: DictConfig, datamodule: MNISTDataModule) -> int:
    """Training batches per epoch: all, or +trainer.limit_train_batches=N (--train-batches), as Lightning counts."""
    batches = len(datamodule.train_dataloader())
    limit = cfg.trainer.get("limit_train_batches")
    return batches if limit is None else min(batches, int(limit))


def per_sample_epoch(cfg: DictConfig, device: torch.device) -> float:
    """One training epoch the common way: torchvision's MNIST Dataset, per-sample ToTensor/Normalize, a
    DataLoader. It is what the tensor-resident data module replaces; timed for docs/PERFORMANCE.md."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_study import mnist_files

    mnist_files.ensure_mnist(cfg.data.data_dir, cfg.data.checksums, download=False)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(cfg.data.data_dir, train=True, download=False, transform=transform)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True)
    L.seed_everything(cfg.seed, verbose=False)
    classifier = build_classifier(cfg)
    classifier.configure_model()
    net = classifier.net.to(device)
    optimizer, _ = build_optimizer(net.parameters(), cfg.optimizer, cfg.scheduler, len(loader))
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def compose_config(
    model: str, epochs: int, overrides: list[str], regularizer: str | None = None, precision: str | None = None,
    train_batches: int | None = None,
) -> DictConfig:  # fmt: skip
    """train.py's config with `overrides`, then the benchmark's own choices (None: the config's, or the override's)."""
    chosen = {"model": model, "regularizer": regularizer, "trainer.precision": precision}
    chosen |= {"+trainer.limit_train_batches": train_batches, "trainer.max_epochs": epochs}
    own = [f"{key}={value}" for key, value in chosen.items() if value is not None]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *own])
    with open_dict(cfg):
        cfg.output_dir = tempfile.gettempdir()  # project_epochs trains in a temporary folder of its own
        cfg.trainer.enable_progress_bar = False  # as in every run that is not on an interactive terminal
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["softmax", "mlp", "cnn"])
    parser.add_argument("--regularizers", nargs="+", default=[None], help="e.g. none dropout bn (default: none)")
    parser.add_argument("--precisions", nargs="+", default=[None], help="e.g. 32-true bf16-mixed (default: auto)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side; the first is warm-up")
    parser.add_argument("--train-batches", type=int, default=None, help="training batches per epoch (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="raw and project take turns this many times; medians (ratio: min-max)"
    )
    parser.add_argument(
        "--per-sample", action="store_true", help="also time one epoch through torchvision's Dataset + DataLoader"
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. trainer=gpu data.batch_size=512")
    args = parser.parse_args(argv)
    skip_lightnings_nvml_check_without_gpus()  # as train.py does; the raw loop then runs as a Lightning-free script
    torch.backends.cudnn.benchmark = True
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # model summaries, "GPU available: ..."

    rows = []
    for model, regularizer, precision in itertools.product(args.models, args.regularizers, args.precisions):
        cfg = compose_config(model, args.epochs, args.overrides, regularizer, precision, args.train_batches)
        trainer = build_trainer(cfg, Path(tempfile.gettempdir()))  # resolves precision=auto, as train.py does
        device = trainer.strategy.root_device
        datamodule = build_datamodule(cfg)
        datamodule.trainer = trainer  # the same device placement as in training
        datamodule.prepare_data()
        datamodule.setup("fit")
        precision = str(trainer.precision)
        with open_dict(cfg):
            cfg.trainer.precision = precision
        times: dict[str, list[float]] = {"raw": [], "project": []}
        for round_ in range(args.rounds):  # the sides take turns, so a machine that drifts slows both
            for side in sorted(times, reverse=bool(round_ % 2)):
                epochs = raw_epochs(cfg, datamodule, device, precision) if side == "raw" else project_epochs(cfg)
                times[side].append(statistics.median(epochs[1:] or [float("nan")]))
        ratios = [project / raw for raw, project in zip(times["raw"], times["project"], strict=True)]
        raw, project, ratio = (statistics.median(values) for values in (times["raw"], times["project"], ratios))
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        regularizer = cfg.regularizer.name
        rows.append((model, regularizer, precision, raw, project, f"{ratio:.2f}{spread}"))
        print(
            f"{model}-{regularizer} ({precision}): raw {raw:.3f} s/epoch, project {project:.3f} s/epoch, "
            f"ratio {ratio:.2f}{spread}",
            flush=True,
        )
        if args.per_sample:
            seconds = per_sample_epoch(cfg, device)
            print(f"{model}: torchvision Dataset + DataLoader, training only: {seconds:.3f} s/epoch", flush=True)

    device_name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    batches = f"{args.train_batches} training batches an epoch" if args.train_batches else "whole epochs"
    print(f"\n{device_name}; batch {cfg.data.batch_size}, {batches}; overrides: {' '.join(args.overrides) or 'none'}")
    print("| model | regularizer | precision | raw PyTorch (s/epoch) | project (s/epoch) | ratio |")
    print("|---|---|---|---|---|---|")
    for model, regularizer, precision, raw, project, ratio in rows:
        print(f"| {model} | {regularizer} | {precision} | {raw:.3f} | {project:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
