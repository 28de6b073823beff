"""Train one network on MNIST: python train.py model=cnn regularizer=bn (see README.md)."""

import hydra
from omegaconf import DictConfig

from mnist_study.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)["test/acc"]


if __name__ == "__main__":
    main()
