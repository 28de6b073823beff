"""train.py's typed configuration: dataclass schemas in Hydra's ConfigStore.

conf/train.yaml lists `train_schema` first in its defaults (the top-level keys, `data`, `trainer`)
and `schema/<group>: ${<group>}` before each option group, so OmegaConf checks every value's type as the
config is composed. What a type cannot say (a positive batch size, a finite learning rate) is each field's
`Allowed` metadata, checked by config.checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from mnist_study.config.help import public_config_groups
from mnist_study.runs.names import job_dirname, run_name, run_stamp

CONFIG_NAME = "train"
SEED_LIMIT = 2**32  # lightning.seed_everything replaces a seed outside [0, 2**32) by a random one


@dataclass(frozen=True)
class Allowed:
    """What a key accepts beyond its type: the words an error uses, and the test."""

    words: str
    test: Callable[[Any], bool]

    @property
    def meta(self) -> dict[str, Allowed]:
        """A schema field's metadata: `field(default=..., metadata=POSITIVE_INT.meta)`."""
        return {"allowed": self}


POSITIVE_INT = Allowed("a positive integer", lambda v: v >= 1)
SEED = Allowed("an integer in [0, 2**32)", lambda v: 0 <= v < SEED_LIMIT)
POSITIVE_NUMBER = Allowed("a finite number > 0", lambda v: math.isfinite(v) and v > 0)
NON_NEGATIVE_NUMBER = Allowed("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
DROPOUT_RATE = Allowed("in [0, 1)", lambda v: 0 <= v < 1)
DROPOUT_MASK = Allowed("fast or torch", lambda v: v in ("fast", "torch"))
MOMENTUM = Allowed("a number in [0, 1)", lambda v: 0 <= v < 1)
BN_MOMENTUM = Allowed("a number in [0, 1]", lambda v: 0 <= v <= 1)
PCT_START = Allowed("a number in (0, 1)", lambda v: 0 < v < 1)
ODD_SIZE = Allowed("an odd positive integer (the padding keeps the image size)", lambda v: v >= 1 and v % 2 == 1)
SIZES = Allowed("a list of positive integers", lambda v: all(x >= 1 for x in v))
CHANNELS = Allowed(
    "a list of at most 4 positive integers (each entry halves the 28-pixel side)",
    lambda v: len(v) <= 4 and all(x >= 1 for x in v),
)
# What a search optimizes: a validation number of result.json, never a test one.
VALIDATION_METRIC = Allowed("best_val/acc or null", lambda v: v is None or v == "best_val/acc")
LEARNING_RATES = Allowed(
    "a mapping of model names to finite numbers > 0", lambda v: all(POSITIVE_NUMBER.test(x) for x in v.values())
)


@dataclass
class DataConfig:
    data_dir: str = "data"
    batch_size: int = field(default=128, metadata=POSITIVE_INT.meta)
    eval_batch_size: int = field(default=1000, metadata=POSITIVE_INT.meta)
    val_size: int = field(default=5000, metadata=POSITIVE_INT.meta)
    split_seed: int = field(default=0, metadata=SEED.meta)
    on_device: bool = True
    download: bool = True
    # {train_images: <md5>, ...} or null; untyped because OmegaConf cannot merge a mapping onto an
    # Optional[dict] that is None. mnist_files.checked_checksums checks it before any data is read.
    checksums: Any = None


@dataclass
class TrainerConfig:
    """The lightning.Trainer arguments conf/trainer/ and conf/debug/ set; `+trainer.<argument>=` adds others."""

    max_epochs: int = field(default=30, metadata=POSITIVE_INT.meta)
    accelerator: str = "auto"
    devices: Any = 1
    precision: Any = "auto"
    deterministic: Any = False  # true, false or "warn"
    log_every_n_steps: int = field(default=50, metadata=POSITIVE_INT.meta)
    enable_progress_bar: Optional[bool] = None  # noqa: UP045
    enable_model_summary: bool = True
    profiler: Optional[str] = None  # noqa: UP045
    # Set by some trainer and debug options only; elsewhere lightning.Trainer's own defaults.
    num_nodes: int = field(default=1, metadata=POSITIVE_INT.meta)
    strategy: str = "auto"
    sync_batchnorm: bool = False
    fast_dev_run: Any = False  # an int (batches) or a bool
    overfit_batches: Any = 0.0  # an int (batches) or a float (a fraction)


@dataclass
class SoftmaxConfig:
    name: str = "softmax"


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [512, 256], metadata=SIZES.meta)


@dataclass
class CNNConfig:
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64], metadata=CHANNELS.meta)
    kernel_size: int = field(default=3, metadata=ODD_SIZE.meta)
    hidden_size: int = field(default=128, metadata=POSITIVE_INT.meta)


@dataclass
class NoRegularizerConfig:
    name: str = "none"


@dataclass
class DropoutConfig:
    name: str = "dropout"
    rate: float = field(default=0.2, metadata=DROPOUT_RATE.meta)
    mask: str = field(default="fast", metadata=DROPOUT_MASK.meta)


@dataclass
class BatchNormConfig:
    name: str = "bn"
    momentum: float = field(default=0.1, metadata=BN_MOMENTUM.meta)


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = field(default=0.001, metadata=POSITIVE_NUMBER.meta)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE_NUMBER.meta)
    fused: bool = True


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = field(default=0.01, metadata=NON_NEGATIVE_NUMBER.meta)


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = field(default=0.05, metadata=POSITIVE_NUMBER.meta)
    momentum: float = field(default=0.9, metadata=MOMENTUM.meta)
    nesterov: bool = True
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE_NUMBER.meta)
    fused: bool = True


@dataclass
class ConstantScheduleConfig:
    name: str = "none"


@dataclass
class CosineConfig:
    name: str = "cosine"


@dataclass
class OneCycleConfig:
    name: str = "onecycle"
    pct_start: float = field(default=0.25, metadata=PCT_START.meta)


@dataclass
class TrainConfig:
    """The top level of conf/train.yaml. The option groups are typed by their own schemas (GROUPS)."""

    seed: int = field(default=0, metadata=SEED.meta)
    ckpt_path: Optional[str] = None  # noqa: UP045
    test_every_epoch: bool = False
    channels_last: bool = True
    compile: bool = False
    fill_uninitialized_memory: bool = False
    output_dir: str = "???"
    optimized_metric: Optional[str] = field(default=None, metadata=VALIDATION_METRIC.meta)  # noqa: UP045
    tuned_lr: dict[str, float] = field(default_factory=dict, metadata=LEARNING_RATES.meta)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None  # name -> {_target_: a Lightning logger, its arguments}, checked by config.loggers
    model: Any = None
    regularizer: Any = None
    optimizer: Any = None
    scheduler: Any = None
    callbacks: Any = None  # free-form: name -> {_target_: a Lightning callback, its arguments}


# Each option of each group: conf/<group>/<option>.yaml is merged onto schema/<group>/<option>.
GROUPS: dict[str, dict[str, type]] = {
    "model": {"softmax": SoftmaxConfig, "mlp": MLPConfig, "cnn": CNNConfig},
    "regularizer": {"none": NoRegularizerConfig, "dropout": DropoutConfig, "bn": BatchNormConfig},
    "optimizer": {"adam": AdamConfig, "adamw": AdamWConfig, "sgd": SGDConfig},
    "scheduler": {"none": ConstantScheduleConfig, "cosine": CosineConfig, "onecycle": OneCycleConfig},
}


def register() -> None:
    """The schemas in Hydra's ConfigStore and the resolvers conf/train.yaml uses (hydra_plugins/ calls this
    whenever Hydra starts)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, options in GROUPS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema, package=group)
    OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("public_config_groups", public_config_groups, replace=True)
