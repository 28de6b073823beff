"""The typed configs of eval.py, predict.py, export.py and serve.py (conf/<tool>.yaml names `<tool>_schema` first
in its defaults), and the check of a tool's command line before Hydra runs it: a missing ckpt_path, a value of the
wrong type, an unknown key or a value outside what its key allows is one UserError naming the key and what it
takes. No torch import here: `--help` and a bad command line answer at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mnist_study.config.command_line import describe, override_setting
from mnist_study.config.schema import POSITIVE_INT, SEED, Allowed
from mnist_study.errors import UserError, first_line
from mnist_study.runs.folders import check_writable
from mnist_study.runs.names import job_dirname

SPLITS = Allowed("test or val", lambda v: v in ("test", "val"))
FORMATS = Allowed("onnx or torchscript", lambda v: v in ("onnx", "torchscript"))
TOP_K = Allowed("an integer from 1 to 10", lambda v: 1 <= v <= 10)
PORT = Allowed("an integer from 0 to 65535 (0: any free port)", lambda v: 0 <= v <= 65535)
CHECK_IMAGES = Allowed("an integer from 1 to 10000", lambda v: 1 <= v <= 10_000)
CKPT_EXAMPLE = "outputs/runs/<run>/checkpoints/best-epoch<NN>.ckpt"
# The file a tool writes where asked to: its key, and the suffixes it may take (by export's format).
EXPORT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}


@dataclass
class RunDataConfig:
    """The data keys of train.py; each null takes the value the checkpoint's run had (its .hydra/config.yaml),
    so the validation split is the run's own, else train.py's default."""

    data_dir: Optional[str] = None  # noqa: UP045
    eval_batch_size: Optional[int] = field(default=None, metadata=POSITIVE_INT.meta)  # noqa: UP045
    val_size: Optional[int] = field(default=None, metadata=POSITIVE_INT.meta)  # noqa: UP045
    split_seed: Optional[int] = field(default=None, metadata=SEED.meta)  # noqa: UP045
    on_device: Optional[bool] = None  # noqa: UP045
    download: Optional[bool] = None  # noqa: UP045
    checksums: Any = None


@dataclass
class EvalTrainerConfig:
    """lightning.Trainer arguments for the test loop. precision null: the run's (its result.json), so that the
    numbers are the run's own; deterministic as train.py's default."""

    accelerator: str = "auto"
    devices: Any = 1
    precision: Any = None
    deterministic: Any = True
    enable_progress_bar: Optional[bool] = None  # noqa: UP045


@dataclass
class EvalConfig:
    ckpt_path: str = MISSING
    split: str = field(default="test", metadata=SPLITS.meta)
    data: RunDataConfig = field(default_factory=RunDataConfig)
    trainer: EvalTrainerConfig = field(default_factory=EvalTrainerConfig)
    output_dir: str = MISSING


@dataclass
class PredictConfig:
    ckpt_path: str = MISSING
    images: str = MISSING
    csv: Optional[str] = None  # noqa: UP045
    top_k: int = field(default=3, metadata=TOP_K.meta)
    batch_size: int = field(default=256, metadata=POSITIVE_INT.meta)
    output_dir: str = MISSING


@dataclass
class ExportConfig:
    ckpt_path: str = MISSING
    format: str = field(default="onnx", metadata=FORMATS.meta)
    output: Optional[str] = None  # noqa: UP045
    opset: Optional[int] = field(default=None, metadata=POSITIVE_INT.meta)  # noqa: UP045
    check_images: int = field(default=256, metadata=CHECK_IMAGES.meta)
    data: RunDataConfig = field(default_factory=RunDataConfig)
    output_dir: str = MISSING


@dataclass
class ServeConfig:
    ckpt_path: str = MISSING
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata=PORT.meta)


SCHEMAS: dict[str, type] = {"eval": EvalConfig, "predict": PredictConfig, "export": ExportConfig, "serve": ServeConfig}
# What each tool needs that has no default, as an example value for the error that asks for it.
REQUIRED = {"ckpt_path": CKPT_EXAMPLE, "images": "<an image file, a folder of images or a glob such as 'digits/*.png'>"}


def checkpoint_name(ckpt_path: str, limit: int = 200) -> str:
    """A checkpoint's name for the folder of what a tool makes of it: its run folder's name and its own,
    `2026-12-04_17-33-00-123456_cnn-bn_best-epoch07` (within `limit` bytes: runs.names.job_dirname)."""
    path = Path(ckpt_path)
    run = path.parent.parent.name if path.parent.name == "checkpoints" else ""
    return job_dirname(f"{run}_{path.stem}" if run else path.stem, limit)


def register() -> None:
    """`<tool>_schema` for each tool in Hydra's ConfigStore and the resolver their conf/<tool>.yaml use (the entry
    points call this before hydra.main)."""
    store = ConfigStore.instance()
    for tool, schema in SCHEMAS.items():
        store.store(name=f"{tool}_schema", node=schema)
    OmegaConf.register_new_resolver("checkpoint_name", checkpoint_name, replace=True)


def command_line_check(tool: str) -> Callable[[Sequence[str], Path], None]:
    """For runs.ending.refuse_bad_command_line: the check of `python <tool>.py <overrides>`."""

    def check(overrides: Sequence[str], config_dir: Path) -> None:
        check_command_line(tool, overrides, config_dir)

    return check


def check_command_line(tool: str, overrides: Sequence[str], config_dir: Path) -> DictConfig | None:
    """The config `python <tool>.py <overrides>` runs with; UserError at its first problem. None where Hydra's own
    message is the better one (a syntax error, an unknown config group): Hydra then reports it itself."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return None
    if any(override.is_sweep_override() for override in parsed if not override.key_or_group.startswith("hydra")):
        raise UserError(f"{tool}.py runs once: give each key one value (a sweep with , or range() is train.py's)")
    register()
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        try:
            cfg = compose(tool, overrides=list(overrides))
        except MissingConfigException:
            return None
        except HydraException as err:
            raise UserError(composition_message(tool, err, list(overrides))) from None
    schema = SCHEMAS[tool]
    for key, example in REQUIRED.items():
        if key in {f.name for f in fields(schema)} and OmegaConf.is_missing(cfg, key):
            raise UserError(f"{key} is required: python {tool}.py {key}={example}")
    check_values(cfg, schema, "")
    if tool == "predict" and cfg.csv is not None:
        check_output_file("csv", cfg.csv, (".csv",), cfg.ckpt_path)
    if tool == "export" and cfg.output is not None:
        check_output_file("output", cfg.output, EXPORT_SUFFIXES[cfg.format], cfg.ckpt_path)
    return cfg


def check_output_file(key: str, value: str, suffixes: tuple[str, ...], ckpt_path: str) -> None:
    """A file the tool will replace whole: it must carry the suffix of what is written there (so that no image,
    checkpoint or other file of the user's is overwritten by a typo), not be a folder or the checkpoint read, and
    its folder must be writable."""
    path, endings = Path(value), " or ".join(suffixes)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{key}={value} must be a file name ending in {endings}: the file is written over whole")
    if path.is_dir():
        raise UserError(f"{key}={value} is a folder: give a file name ending in {endings}")
    if path.exists() and Path(ckpt_path).exists() and path.resolve() == Path(ckpt_path).resolve():
        raise UserError(f"{key}={value} is the checkpoint being read (ckpt_path): give another file")
    check_writable(path.parent, key, value)


def composition_message(tool: str, err: HydraException, overrides: list[str]) -> str:
    cause = err.__cause__
    if not isinstance(cause, OmegaConfBaseException):
        return first_line(err)
    key = str(cause.full_key or "")
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and is_dataclass(cause.object_type):
        known = ", ".join(f.name for f in fields(cause.object_type))
        where = f"{tool}.py's {key.rpartition('.')[0]}" if "." in key else f"{tool}.py"
        return f"{key} is not an option of {where}: its options are {known}"
    line = override_setting(key, overrides) if isinstance(cause, ValidationError) else None
    if line is None:
        return f"{first_line(err)} {first_line(cause)}"
    parsed = OverridesParser.create().parse_override(line)
    set_key = parsed.get_key_element().lstrip("+~")
    return f"{set_key} must be {words_for(SCHEMAS[tool], set_key)}, got {parsed.value()!r}"


def words_for(schema: type, key: str) -> str:
    """What `key` (dotted, under `schema`) takes, in words: its check's words, else its type's."""
    *parents, name = key.split(".")
    for parent in parents:
        schema = get_type_hints(schema)[parent]
    spec = next(f for f in fields(schema) if f.name == name)
    allowed: Allowed | None = spec.metadata.get("allowed")
    if allowed is not None and allowed.words.startswith(("a ", "an ")):
        return allowed.words
    words = describe(get_type_hints(schema)[name])
    return f"{words} {allowed.words}" if allowed is not None else words


def check_values(node: DictConfig, schema: type, prefix: str) -> None:
    """Each field's Allowed check (a null stays allowed where the type is Optional), recursively."""
    hints = get_type_hints(schema)
    for spec in fields(schema):
        if spec.name not in node or OmegaConf.is_missing(node, spec.name):
            continue
        if is_dataclass(hints[spec.name]):
            check_values(node[spec.name], hints[spec.name], f"{prefix}{spec.name}.")
            continue
        allowed: Allowed | None = spec.metadata.get("allowed")
        if allowed is None:
            continue
        value = node[spec.name]
        if value is not None and (isinstance(value, bool) or not allowed.test(value)):
            raise UserError(f"{prefix}{spec.name} must be {allowed.words}, got {value!r}")
