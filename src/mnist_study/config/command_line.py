"""Every job of a command line checked before Hydra runs the first: sweeps expanded, each job's config composed
with Hydra's compose API, the first problem turned into one UserError. train.py calls it before hydra.main, so a
bad value in a sweep stops the sweep before its first job."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mnist_study.config.checks import check_config, unknown_key
from mnist_study.config.loggers import installed
from mnist_study.config.schema import CONFIG_NAME, Allowed
from mnist_study.errors import UserError, first_line


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
            choices[key] = sweep_values(key, override)
        else:
            choices[key] = [override.input_line or f"{key}={override.get_value_element_as_str()}"]
    check_optional_packages(choices)
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        first = [lines[0] for lines in choices.values()]
        base = compose_job(first, return_hydra_config=True)
        if base is None:
            return 0
        swept = OmegaConf.select(base, "hydra.sweeper.params") or {}
        for key, values in swept.items():
            if not any(k.lstrip("+~") == str(key).lstrip("+~") for k in choices):
                parsed_values = OverridesParser.create().parse_overrides([f"{key}={values}"])[0]
                choices[str(key)] = sweep_values(str(key), parsed_values)
        # A grid sweeper runs every combination; a sampler (hparams_search=optuna) draws its own, so there each
        # value is checked once, beside the first value of every other key.
        grid = str(OmegaConf.select(base, "hydra.sweeper._target_")).endswith("BasicSweeper")
        count = 0
        for job in itertools.product(*choices.values()) if grid else one_change_at_a_time(choices):
            cfg = compose_job(list(job))
            if cfg is None:
                return count
            check(cfg)
            count += 1
    return count


def one_change_at_a_time(choices: dict[str, list[str]]) -> Iterator[list[str]]:
    first = [values[0] for values in choices.values()]
    yield first
    for index, values in enumerate(choices.values()):
        for value in values[1:]:
            yield [*first[:index], value, *first[index + 1 :]]


def sweep_values(key: str, override: Override) -> list[str]:
    """The overrides a sweep's jobs get: each value of a choice or range; the two ends of an interval, between
    which a sampler (hparams_search=optuna) draws."""
    if override.is_interval_sweep():
        interval = override.value()
        return [f"{key}={interval.start}", f"{key}={interval.end}"]
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


# Group options that need an optional package: (group, option) -> (the extra in pyproject.toml, [(module, package)]).
OPTIONAL_PACKAGES = {
    ("hparams_search", "optuna"): (
        "optuna",
        [
            ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
            ("optuna", "optuna"),
            ("sklearn", "scikit-learn"),  # optuna.importance
        ],
    ),
}


def check_optional_packages(choices: dict[str, list[str]]) -> None:
    for (group, option), (extra, packages) in OPTIONAL_PACKAGES.items():
        if f"{group}={option}" not in choices.get(group, []):
            continue
        for module, package in packages:
            if not installed(module):
                raise UserError(f"{group}={option} needs the {package} package: pip install -e '.[{extra}]'")


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
