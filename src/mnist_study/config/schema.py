"""train.py's typed configuration: dataclass schemas in Hydra's ConfigStore.

conf/train.yaml lists `train_schema` first in its defaults (the top-level keys, `data`, `trainer`)
and `schema/<group>: ${<group>}` before each option group, so OmegaConf checks every value's type as the
config is composed. What a type cannot say (a positive batch size, a finite learning rate) is each field's
`Allowed` metadata, checked by config.checks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_args, get_origin

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from mnist_study.config.help import public_config_groups
from mnist_study.runs.names import job_dirname, resume_folder, run_name, run_stamp

CONFIG_NAME = "train"
SEED_LIMIT = 2**32  # lightning.seed_everything replaces a seed outside [0, 2**32) by a random one


@dataclass(frozen=True)
class Allowed:
    """What a key accepts beyond its type: the words an error uses, and the test. `words` may be a function, for
    lists read from Lightning when an error needs them; `booleans`: true and false are among the values."""

    words: str | Callable[[], str]
    test: Callable[[Any], bool]
    booleans: bool = False
    each: bool = False  # a mapping's values are tested, each named <key>.<name> in an error

    @property
    def meta(self) -> dict[str, Allowed]:
        """A schema field's metadata: `field(default=..., metadata=POSITIVE_INT.meta)`."""
        return {"allowed": self}

    def text(self) -> str:
        return self.words if isinstance(self.words, str) else self.words()

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and not self.booleans:
            return False
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, AttributeError):  # a value of another type than the test expects
            return False


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lightning_choices(kind: str) -> list[str]:
    """Names Lightning accepts for a Trainer argument, from its public registries and signature (imported only
    when a value is not one of the common ones: config checks run before torch is loaded)."""
    import lightning as L

    if kind == "accelerator":
        from lightning.pytorch.accelerators import AcceleratorRegistry

        return ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if kind == "strategy":
        from lightning.pytorch.strategies import StrategyRegistry

        return ["auto", *StrategyRegistry.available_strategies()]
    annotation = inspect.signature(L.Trainer).parameters["precision"].annotation
    return ["auto", *dict.fromkeys(str(v) for v in literal_values(annotation))]


def literal_values(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [value for arg in get_args(annotation) for value in literal_values(arg)]


def one_of(kind: str, common: tuple[str, ...]) -> Allowed:
    return Allowed(
        lambda: "one of " + ", ".join(lightning_choices(kind)),
        lambda v: isinstance(v, (str, int)) and (str(v) in common or str(v) in lightning_choices(kind)),
    )


POSITIVE_INT = Allowed("a positive integer", lambda v: is_int(v) and v >= 1)
NON_NEGATIVE_INT = Allowed("an integer >= 0", lambda v: is_int(v) and v >= 0)
SEED = Allowed("an integer in [0, 2**32)", lambda v: 0 <= v < SEED_LIMIT)
POSITIVE_NUMBER = Allowed("a finite number > 0", lambda v: math.isfinite(v) and v > 0)
NON_NEGATIVE_NUMBER = Allowed("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
DROPOUT_RATE = Allowed("in [0, 1)", lambda v: 0 <= v < 1)
DROPOUT_MASK = Allowed("fast or torch", lambda v: v in ("fast", "torch"))
MOMENTUM = Allowed("a number in [0, 1)", lambda v: 0 <= v < 1)
BN_MOMENTUM = Allowed("a number in [0, 1]", lambda v: 0 <= v <= 1)
PCT_START = Allowed("a number in (0, 1)", lambda v: 0 < v < 1)
ODD_SIZE = Allowed("an odd positive integer (the padding keeps the image size)", lambda v: v >= 1 and v % 2 == 1)
SIZES = Allowed(
    "a non-empty list of positive integers (model=softmax is the network without hidden layers)",
    lambda v: len(v) >= 1 and all(x >= 1 for x in v),
)
CHANNELS = Allowed(
    "a list of 1 to 4 positive integers (each entry halves the 28-pixel side; model=mlp has no convolutions)",
    lambda v: 1 <= len(v) <= 4 and all(x >= 1 for x in v),
)
# What a search optimizes: a validation number of result.json, never a test one.
VALIDATION_METRIC = Allowed("best_val/acc or null", lambda v: v is None or v == "best_val/acc")
LEARNING_RATES = Allowed("a finite number > 0", lambda v: math.isfinite(v) and v > 0, each=True)
FOLDER = Allowed("a folder path (not empty)", lambda v: bool(v.strip()))
# lightning.Trainer's arguments, as the project lets them be set (Lightning's own meaning, ranged)
ACCELERATOR = one_of("accelerator", ("auto", "cpu", "gpu", "cuda", "mps"))
STRATEGY = one_of("strategy", ("auto", "ddp", "ddp_spawn"))
PRECISION = one_of("precision", ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "16-true"))
DEVICES = Allowed(
    "a positive integer, -1 (every device), auto, or a non-empty list of device indices",
    lambda v: (
        (is_int(v) and (v >= 1 or v == -1))
        or v == "auto"
        or (isinstance(v, str) and all(part.strip().isdigit() for part in v.split(",")) and int(v.split(",")[0]) >= 0)
        or (isinstance(v, list) and len(v) >= 1 and all(is_int(x) and x >= 0 for x in v))
    ),
)
DETERMINISTIC = Allowed("true, false or warn", lambda v: isinstance(v, bool) or v == "warn", booleans=True)
PROFILER = Allowed("simple, advanced, pytorch or null", lambda v: v in ("simple", "advanced", "pytorch"))
FAST_DEV_RUN = Allowed(
    "true, false or a number of batches >= 0", lambda v: isinstance(v, bool) or (is_int(v) and v >= 0), booleans=True
)
BATCHES_OR_FRACTION = Allowed(
    "a number of batches >= 0 (an integer) or a fraction in [0, 1]",
    lambda v: (is_int(v) and v >= 0) or (isinstance(v, float) and 0 <= v <= 1),
)
SOME_BATCHES_OR_FRACTION = Allowed(
    "a number of batches >= 1 (an integer) or a fraction in (0, 1]",
    lambda v: (is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
)
# Other lightning.Trainer arguments that `+trainer.<name>=` adds: their types and ranges (others go unchecked
# to Lightning, which refuses what it cannot use in one line: training.pipeline).
TRAINER_ARGUMENTS: dict[str, Allowed] = {
    "limit_train_batches": SOME_BATCHES_OR_FRACTION,  # 0 would train nothing
    "limit_test_batches": SOME_BATCHES_OR_FRACTION,  # 0 would leave result.json without a test result
    "limit_val_batches": SOME_BATCHES_OR_FRACTION,  # 0: no val/acc, which selects the best checkpoint
    "limit_predict_batches": BATCHES_OR_FRACTION,
    "val_check_interval": SOME_BATCHES_OR_FRACTION,
    "check_val_every_n_epoch": POSITIVE_INT,
    "accumulate_grad_batches": POSITIVE_INT,
    "gradient_clip_val": Allowed("a finite number >= 0", lambda v: is_number(v) and v >= 0),
    "gradient_clip_algorithm": Allowed("norm or value", lambda v: v in ("norm", "value")),
    "max_steps": Allowed("an integer >= 1, or -1 (no limit)", lambda v: is_int(v) and (v >= 1 or v == -1)),
    "min_epochs": NON_NEGATIVE_INT,
    "min_steps": NON_NEGATIVE_INT,
    "num_sanity_val_steps": Allowed("an integer >= -1 (-1: the whole validation set)", lambda v: is_int(v) and v >= -1),
    "reload_dataloaders_every_n_epochs": NON_NEGATIVE_INT,
    **{
        name: Allowed("true or false", lambda v: isinstance(v, bool), booleans=True)
        for name in ("benchmark", "inference_mode", "detect_anomaly", "barebones", "enable_checkpointing")
    },
}


@dataclass
class DataConfig:
    data_dir: str = field(default="data", metadata=FOLDER.meta)
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
    accelerator: str = field(default="auto", metadata=ACCELERATOR.meta)
    devices: Any = field(default=1, metadata=DEVICES.meta)
    precision: Any = field(default="auto", metadata=PRECISION.meta)
    deterministic: Any = field(default=False, metadata=DETERMINISTIC.meta)
    log_every_n_steps: int = field(default=50, metadata=POSITIVE_INT.meta)
    enable_progress_bar: Optional[bool] = None  # noqa: UP045
    enable_model_summary: bool = True
    profiler: Optional[str] = field(default=None, metadata=PROFILER.meta)  # noqa: UP045
    # Set by some trainer and debug options only; elsewhere lightning.Trainer's own defaults.
    num_nodes: int = field(default=1, metadata=POSITIVE_INT.meta)
    strategy: str = field(default="auto", metadata=STRATEGY.meta)
    sync_batchnorm: bool = False
    fast_dev_run: Any = field(default=False, metadata=FAST_DEV_RUN.meta)  # an int (batches) or a bool
    overfit_batches: Any = field(default=0.0, metadata=BATCHES_OR_FRACTION.meta)  # an int (batches) or a fraction


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
    oversubscribe: bool = False  # more processes than CPU cores (trainer.devices on the CPU): refused unless true
    output_dir: str = "???"  # the run's folder: set by train.py (hydra.run.dir), never on the command line
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


# Keys of the config that train.py sets itself and a command line must not: why, in one line.
INTERNAL_KEYS = {
    "output_dir": "output_dir is set by train.py (the run's folder, hydra.run.dir; in a sweep hydra.sweep.dir and "
    "its job's subfolder) and cannot be given: choose where a run writes with hydra.run.dir=<folder>",
}


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
    OmegaConf.register_new_resolver("resume_folder", resume_folder, replace=True)
