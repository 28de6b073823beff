"""train.py's typed configuration: dataclass schemas in Hydra's ConfigStore, and the checks that refuse a bad
option in one line naming the key, the value and what is allowed, before any data is read.

conf/train.yaml lists `train_schema` first in its defaults (the top-level keys, `data`, `trainer`, `logger`)
and `schema/<group>: ${<group>}` before each option group, so OmegaConf checks every value's type as the
config is composed. What a type cannot say (a positive batch size, a finite learning rate, a seed that
`seed_everything` accepts, keys added with `+`) is checked by `check_config`. `check_command_line` composes
every job of a command line (sweeps expanded) with Hydra's compose API and turns the first problem into a
`UserError`; train.py calls it before Hydra runs anything, so a bad value in a sweep stops it before its
first job.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mnist_study.errors import UserError, first_line

CONFIG_NAME = "train"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/ (the package is installed editable)
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
MOMENTUM = Allowed("a number in [0, 1)", lambda v: 0 <= v < 1)
BN_MOMENTUM = Allowed("a number in [0, 1]", lambda v: 0 <= v <= 1)
PCT_START = Allowed("a number in (0, 1)", lambda v: 0 < v < 1)
ODD_SIZE = Allowed("an odd positive integer (the padding keeps the image size)", lambda v: v >= 1 and v % 2 == 1)
SIZES = Allowed("a list of positive integers", lambda v: all(x >= 1 for x in v))
CHANNELS = Allowed(
    "a list of at most 4 positive integers (each entry halves the 28-pixel side)",
    lambda v: len(v) <= 4 and all(x >= 1 for x in v),
)
LEARNING_RATES = Allowed(
    "a mapping of model names to finite numbers > 0", lambda v: all(POSITIVE_NUMBER.test(x) for x in v.values())
)


# --- the schemas ------------------------------------------------------------------------------------------


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
class LoggerConfig:
    log_graph: bool = False
    flush_secs: int = field(default=30, metadata=POSITIVE_INT.meta)


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
    tuned_lr: dict[str, float] = field(default_factory=dict, metadata=LEARNING_RATES.meta)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
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
# Arguments that train.py passes to lightning.Trainer / TensorBoardLogger itself.
TRAINER_ARGUMENTS_SET_BY_TRAIN = ("logger", "callbacks", "default_root_dir", "plugins")
LOGGER_ARGUMENTS_SET_BY_TRAIN = ("save_dir", "name", "version", "default_hp_metric", "kwargs")


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, options in GROUPS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema, package=group)


register()


# --- checks after composition -------------------------------------------------------------------------------


def check_names(cfg: DictConfig) -> None:
    """The names other keys are looked up by (optimizer.lr reads tuned_lr.<model.name>), before anything resolves."""
    from mnist_study.backbones import BACKBONES, REGULARIZERS

    for group, known in (("model", BACKBONES), ("regularizer", REGULARIZERS)):
        if (name := cfg[group].name) not in known:
            raise UserError(f"{group}={name} is unknown: choose one of {', '.join(known)}")
    if OmegaConf.is_interpolation(cfg.optimizer, "lr") and cfg.model.name not in cfg.get("tuned_lr", {}):
        raise UserError(
            f"optimizer.lr: tuned_lr has no rate for model={cfg.model.name}: pass optimizer.lr=<rate> "
            f"or add +tuned_lr.{cfg.model.name}=<rate>"
        )


def check_config(cfg: DictConfig) -> None:
    """UserError for the first value outside what its key allows, or a key no schema knows (added with +)."""
    check_names(cfg)
    check_fields(cfg, TrainConfig, "")
    for group, options in GROUPS.items():
        node = cfg.get(group)
        if isinstance(node, DictConfig) and node.get("name") in options:
            check_fields(node, options[node.name], f"{group}.")
    check_extra_keys(cfg.get("trainer"), "trainer")
    check_extra_keys(cfg.get("logger"), "logger")
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, DictConfig) and optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise UserError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0: set both, or nesterov=false")


def check_fields(node: DictConfig, schema: type, prefix: str) -> None:
    """Value checks of `schema`'s fields in `node`, recursively; keys outside the schema are refused, except
    under trainer and logger, whose extra keys check_extra_keys compares with the real signatures."""
    hints = get_type_hints(schema)
    known = {f.name: f for f in fields(schema)}
    if prefix not in ("trainer.", "logger."):
        for key in node:
            if key not in known:
                raise unknown_key(f"{prefix}{key}", schema, prefix)
    for name, spec in known.items():
        if name not in node:
            continue
        if is_dataclass(hints[name]):
            if isinstance(child := node[name], DictConfig):
                check_fields(child, hints[name], f"{prefix}{name}.")
            continue
        allowed: Allowed | None = spec.metadata.get("allowed")
        if allowed is None:
            continue
        value = node[name]
        plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        if isinstance(plain, bool) or not allowed.test(plain):
            raise UserError(f"{prefix}{name} must be {allowed.words}, got {plain!r}")


def unknown_key(key: str, schema: type, prefix: str) -> UserError:
    known = [f.name for f in fields(schema)]
    close = difflib.get_close_matches(key.removeprefix(prefix), known, n=1)
    hint = f"did you mean {prefix}{close[0]}? " if close else ""
    return UserError(f"{key} is not an option of {label(schema, prefix)}: {hint}its options are {', '.join(known)}")


def label(schema: type, prefix: str) -> str:
    """How an error names a node: model=mlp for a group option, data for data, train.py for the top level."""
    for group, options in GROUPS.items():
        for name, option_schema in options.items():
            if option_schema is schema:
                return f"{group}={name}"
    return prefix.rstrip(".") or "train.py"


def check_extra_keys(node: Any, group: str) -> None:
    """Keys added with +trainer.<key>= (+logger.<key>=) must be arguments of the class they are passed to."""
    if not isinstance(node, DictConfig):
        return
    schema, receiver, set_by_train = (
        (TrainerConfig, "lightning.Trainer", TRAINER_ARGUMENTS_SET_BY_TRAIN)
        if group == "trainer"
        else (LoggerConfig, "TensorBoardLogger", LOGGER_ARGUMENTS_SET_BY_TRAIN)
    )
    known = [f.name for f in fields(schema)]
    arguments = [name for name in receiver_arguments(group) if name not in set_by_train]
    for key in node:
        if key in known or key in arguments:
            continue
        if key in set_by_train:
            raise UserError(f"{group}.{key} is set by train.py itself and cannot be configured")
        close = difflib.get_close_matches(str(key), [*known, *arguments], n=1)
        hint = f"did you mean {group}.{close[0]}? " if close else ""
        raise UserError(f"{group}.{key} is not a {receiver} argument: {hint}+{group}.<name>= adds only those")


def receiver_arguments(group: str) -> list[str]:
    # Lightning is imported only here: Hydra imports this module whenever it starts (hydra_plugins/), q1.py too.
    if group == "trainer":
        import lightning as L

        return list(inspect.signature(L.Trainer).parameters)
    from lightning.pytorch.loggers import TensorBoardLogger

    return list(inspect.signature(TensorBoardLogger).parameters)


# --- checks at composition: the whole command line --------------------------------------------------------


def check_command_line(
    overrides: Sequence[str], config_dir: Path, check: Callable[[DictConfig], None] = check_config
) -> int:
    """Compose the config of every job that `overrides` would run (command-line sweeps and the sweeper's
    params of e.g. experiment=study expanded) and run `check` on each; UserError at the first problem.
    Problems Hydra reports well itself (an unknown group option, a syntax error) are left to it. Returns the
    number of jobs checked."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return 0  # Hydra names the syntax error itself
    choices: dict[str, list[str]] = {}
    for override in parsed:
        if override.key_or_group.startswith("hydra"):
            continue
        key = override.get_key_element()
        if override.is_sweep_override():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [override.input_line or f"{key}={override.get_value_element_as_str()}"]
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        first = [lines[0] for lines in choices.values()]
        base = compose_job(first, return_hydra_config=True)
        if base is None:
            return 0
        swept = OmegaConf.select(base, "hydra.sweeper.params") or {}
        for key, values in swept.items():
            if not any(k.lstrip("+~") == str(key).lstrip("+~") for k in choices):
                parsed_values = OverridesParser.create().parse_overrides([f"{key}={values}"])[0]
                choices[str(key)] = [f"{key}={value}" for value in parsed_values.sweep_string_iterator()]
        count = 0
        for job in itertools.product(*choices.values()):
            cfg = compose_job(list(job))
            if cfg is None:
                return count
            check(cfg)
            count += 1
    return count


def compose_job(overrides: list[str], return_hydra_config: bool = False) -> DictConfig | None:
    """The job's config; UserError for a value of the wrong type or an unknown key; None where Hydra's own
    message is the better one (it then reports it when it composes the job itself)."""
    try:
        return compose(CONFIG_NAME, overrides=overrides, return_hydra_config=return_hydra_config)
    except MissingConfigException:
        return None  # an unknown group option: Hydra lists the available ones
    except HydraException as err:
        message = composition_message(err, overrides)
        if message is None:
            return None
        raise UserError(message) from None


def composition_message(err: HydraException, overrides: list[str]) -> str | None:
    cause = err.__cause__
    if not isinstance(cause, OmegaConfBaseException):
        return None
    key = str(cause.full_key or "")
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and is_dataclass(cause.object_type):
        prefix = key.rpartition(".")[0]
        return str(unknown_key(key, cause.object_type, f"{prefix}." if prefix else ""))
    line = override_setting(key, overrides) if isinstance(cause, ValidationError) else None
    if line is None:
        return f"{first_line(err)} {first_line(cause)}"
    parsed = OverridesParser.create().parse_override(line)
    set_key = parsed.get_key_element().lstrip("+~")
    words = accepted(set_key, [other for other in overrides if other != line])
    return f"{set_key} must be {words}, got {parsed.value()!r}"


def override_setting(key: str, overrides: list[str]) -> str | None:
    """The command-line override that set `key` (model.hidden_sizes for model.hidden_sizes[0]), if any."""
    setting = []
    for line in overrides:
        name = line.split("=", 1)[0].lstrip("+~")
        if key == name or key.startswith((f"{name}.", f"{name}[")):
            setting.append((len(name), line))
    return max(setting)[1] if setting else None


def accepted(key: str, other_overrides: list[str]) -> str:
    """What `key` accepts, in words (its value check, else its type), read from the schema of its node in the
    config composed without the offending override."""
    unknown = "a value of the type its schema declares"
    try:
        cfg = compose(CONFIG_NAME, overrides=other_overrides)
    except HydraException:
        return unknown
    prefix, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, prefix) if prefix else cfg
    schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
    if schema is dict and prefix:  # an entry of a mapping such as tuned_lr: the mapping's value type
        owner, _, mapping = prefix.rpartition(".")
        owner_schema = OmegaConf.get_type(OmegaConf.select(cfg, owner) if owner else cfg)
        if is_dataclass(owner_schema) and mapping in get_type_hints(owner_schema):
            return describe(get_args(get_type_hints(owner_schema)[mapping])[-1])
        return unknown
    if not is_dataclass(schema):
        return unknown
    spec = next((f for f in fields(schema) if f.name == name), None)
    if spec is None:
        return unknown
    allowed: Allowed | None = spec.metadata.get("allowed")
    if allowed is not None and allowed.words.startswith(("a ", "an ")):
        return allowed.words
    words = describe(get_type_hints(schema)[name])
    return f"{words} {allowed.words}" if allowed is not None else words


def describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union and type(None) in args:
        return f"{describe(next(a for a in args if a is not type(None)))} or null"
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict:
        return f"a mapping of names to {describe(args[1]).removeprefix('an ').removeprefix('a ')}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))
