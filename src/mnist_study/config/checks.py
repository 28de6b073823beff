"""The checks a composed train.py config gets beyond its types: ranges, names, and keys added with `+`. Each
problem is one UserError naming the key, the value and what is allowed."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import fields, is_dataclass
from typing import Any, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_study.config.loggers import check_callbacks_have_a_logger, check_loggers
from mnist_study.config.schema import GROUPS, Allowed, TrainConfig, TrainerConfig
from mnist_study.errors import UserError

# Arguments that train.py passes to lightning.Trainer itself.
TRAINER_ARGUMENTS_SET_BY_TRAIN = ("logger", "callbacks", "default_root_dir", "plugins")


def check_names(cfg: DictConfig) -> None:
    """The names other keys are looked up by (optimizer.lr reads tuned_lr.<model.name>), before anything resolves."""
    for group, known in GROUPS.items():
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
    check_loggers(cfg.get("logger"))
    check_callbacks_have_a_logger(cfg.get("logger"), cfg.get("callbacks"))
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, DictConfig) and optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise UserError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0: set both, or nesterov=false")


def check_fields(node: DictConfig, schema: type, prefix: str) -> None:
    """Value checks of `schema`'s fields in `node`, recursively; keys outside the schema are refused, except
    under trainer, whose extra keys check_extra_keys compares with lightning.Trainer's signature."""
    hints = get_type_hints(schema)
    known = {f.name: f for f in fields(schema)}
    if prefix != "trainer.":
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
    """Keys added with +trainer.<key>= must be arguments of lightning.Trainer."""
    if not isinstance(node, DictConfig):
        return
    schema, receiver, set_by_train = TrainerConfig, "lightning.Trainer", TRAINER_ARGUMENTS_SET_BY_TRAIN
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
    import lightning as L

    return list(inspect.signature(L.Trainer).parameters)
