"""The checks a composed train.py config gets beyond its types: ranges, names, and keys added with `+`. Each
problem is one UserError naming the key, the value and what is allowed."""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import fields, is_dataclass
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_study.config.loggers import check_callbacks_have_a_logger, check_loggers
from mnist_study.config.schema import GROUPS, TRAINER_ARGUMENTS, Allowed, TrainConfig, TrainerConfig
from mnist_study.errors import UserError, first_line

# Arguments that train.py passes to lightning.Trainer itself.
TRAINER_ARGUMENTS_SET_BY_TRAIN = ("logger", "callbacks", "default_root_dir", "plugins")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number_or_int(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


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
    check_callbacks(cfg.get("callbacks"))
    check_callbacks_have_a_logger(cfg.get("logger"), cfg.get("callbacks"))
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, DictConfig) and optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise UserError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0: set both, or nesterov=false")
    trainer = cfg.get("trainer")
    clipped = isinstance(trainer, DictConfig) and bool(trainer.get("gradient_clip_val"))
    fused = isinstance(optimizer, DictConfig) and bool(optimizer.get("fused"))
    if clipped and fused and str(trainer.get("precision")) == "16-mixed":
        raise UserError(
            "optimizer.fused=true cannot go with trainer.gradient_clip_val under trainer.precision=16-mixed: a fused "
            "optimizer unscales its gradients inside its step, after they would be clipped; set optimizer.fused=false"
        )


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
        plain = plain_value(node[name])
        if plain is None and type(None) in get_args(hints[name]):
            continue
        if allowed.each and isinstance(plain, dict):
            for entry, value in plain.items():
                if not allowed.accepts(value):
                    raise UserError(f"{prefix}{name}.{entry} must be {allowed.text()}, got {value!r}")
            continue
        if not allowed.accepts(plain):
            raise UserError(f"{prefix}{name} must be {allowed.text()}, got {plain!r}")


def plain_value(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


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
        if key in known:
            continue
        if key in arguments:
            rule = TRAINER_ARGUMENTS.get(str(key)) if group == "trainer" else None
            value = node[key]
            plain = plain_value(value)
            if rule is not None and not rule.accepts(plain):
                raise UserError(f"{group}.{key} must be {rule.text()}, got {plain!r}")
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


# Keys of a callbacks entry that are Hydra's instructions to instantiate(), not the callback's arguments.
INSTANTIATE_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
ENTRY = "{_target_: <a Lightning Callback class>, <its arguments>}"
SIMPLE_TYPES = {int: ("an integer", is_int), float: ("a number", is_number_or_int), str: ("a string", is_str),
                bool: ("true or false", is_bool)}  # fmt: skip


def check_callbacks(callbacks: Any) -> None:
    """Each entry of the callbacks group is a Lightning Callback class with arguments it takes, of the simple
    types (integer, number, string, boolean) its signature declares: refused in one line before any is built."""
    if callbacks is None:
        return
    if not isinstance(callbacks, DictConfig):
        raise UserError(f"callbacks must be a mapping of names to {ENTRY}, got {callbacks!r}")
    for name in callbacks:
        options = callbacks[name]
        if options is None:  # callbacks.<name>=null drops one, as ~callbacks.<name> does
            continue
        key = f"callbacks.{name}"
        if not isinstance(options, DictConfig) or not isinstance(options.get("_target_"), str):
            raise UserError(f"{key} must be {ENTRY}, got {plain_value(options)!r}")
        callback = callback_class(key, options._target_)
        parameters = inspect.signature(callback).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        try:
            hints = get_type_hints(callback.__init__)
        except Exception:  # annotations that do not evaluate here: the types go unchecked
            hints = {}
        for argument in options:
            if argument in INSTANTIATE_KEYS:
                continue
            if argument not in parameters and not takes_any:
                close = difflib.get_close_matches(str(argument), list(parameters), n=1)
                hint = f"did you mean {key}.{close[0]}? " if close else ""
                raise UserError(
                    f"{key}.{argument} is not an argument of {callback.__name__}: {hint}"
                    f"its arguments are {', '.join(parameters)}"
                )
            try:
                value = options[argument]
            except OmegaConfBaseException:  # an interpolation only the run resolves (${output_dir})
                continue
            words = simple_type_words(hints.get(str(argument)), value)
            if words is not None:
                raise UserError(f"{key}.{argument} must be {words} ({callback.__name__}'s {argument}), got {value!r}")


def callback_class(key: str, target: str) -> type:
    import lightning as L

    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except Exception as err:  # ImportError, AttributeError, ValueError (no module), or what importing it raised
        raise UserError(
            f"{key}._target_={target} cannot be imported ({first_line(err)}): give a Callback class's full name"
        ) from None
    if not (isinstance(found, type) and issubclass(found, L.Callback)):
        raise UserError(f"{key}._target_={target} is not a Lightning Callback class: the callbacks group holds those")
    return found


def simple_type_words(hint: Any, value: Any) -> str | None:
    """What `hint` (a simple type, or an Optional or Union of simple types) accepts, in words, if `value` is not
    one of those; None when it is, or when the hint is something else (not checked here)."""
    options = [a for a in get_args(hint)] if get_origin(hint) in (Union, UnionType) else [hint]
    if value is None and type(None) in options:
        return None
    simple = [SIMPLE_TYPES[o] for o in options if o in SIMPLE_TYPES]
    if not simple or len(simple) < len([o for o in options if o is not type(None)]):
        return None
    if any(test(value) for _, test in simple):
        return None
    words = " or ".join(w for w, _ in simple)
    return f"{words} or null" if type(None) in options else words
