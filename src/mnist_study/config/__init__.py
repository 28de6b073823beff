"""train.py's configuration: the typed schemas (schema), the checks beyond types (checks), the check of a whole
command line before anything runs (command_line) and --help's list of groups (help). conf/ holds the values; this
package their rules."""

from typing import Any

from omegaconf import DictConfig, OmegaConf


def as_dict(cfg: DictConfig, key: str) -> dict[str, Any]:
    """The node `key` of a composed config as a plain, resolved dict (what constructors and checkpoints take)."""
    return OmegaConf.to_container(cfg[key], resolve=True)  # type: ignore[return-value]
