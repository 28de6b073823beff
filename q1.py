"""Backpropagation by hand vs torch.autograd: python q1.py k=2,4,8 (see README.md)."""

import hydra
from omegaconf import DictConfig

from mnist_study.cli import run_task
from mnist_study.manual_backprop.app import run


@hydra.main(version_base="1.3", config_path="conf", config_name="q1")
def main(cfg: DictConfig) -> None:
    run_task(run, cfg)


if __name__ == "__main__":
    main()
