"""Configs composed as the entry points compose them."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_study.inference.config import register

from ..conftest import CONF


def shipped(model: str, regularizer: str) -> tuple[dict, dict]:
    """The `model` and `regularizer` groups as conf/ ships them, composed by Hydra as train.py composes them."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"regularizer={regularizer}"])
    return OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.regularizer)  # type: ignore[return-value]


def tool_cfg(tool: str, *overrides: str, output_dir: Path) -> DictConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(tool, overrides=list(overrides))
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)
    return cfg
