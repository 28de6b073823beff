"""Run folder names: the network first, then the run's other overrides, always one valid file name."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

MAX_NAME_BYTES = 255  # a file name's limit on ext4, xfs, btrfs, NFS
HASH_CHARS = 10
# A "/" in an override's value (monitor:val/acc) would nest the folder; percent-encoded as in a URL. NUL cannot
# reach a command line.
UNSAFE = {"/": "%2F"}


def safe_name(name: str) -> str:
    """`name` with the characters a file name cannot hold replaced."""
    for char, replacement in UNSAFE.items():
        name = name.replace(char, replacement)
    return name


def job_dirname(override_dirname: str, limit: int = MAX_NAME_BYTES) -> str:
    """`override_dirname` when it fits in `limit` bytes, else its start and a hash of the whole (the full
    overrides stay in the job's .hydra/overrides.yaml), with no "/" (safe_name). Deterministic: the same command
    finds the same folder."""
    encoded = safe_name(override_dirname).encode()
    if len(encoded) <= limit:
        return encoded.decode()
    digest = hashlib.sha256(encoded).hexdigest()[:HASH_CHARS]
    head = encoded[: limit - HASH_CHARS - 1].decode(errors="ignore")
    return f"{head}_{digest}"


def split_overrides(override_dirname: str) -> list[str]:
    """Hydra's `key=value,key=value` back into its items; commas inside [...] or {...} belong to a value."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(override_dirname):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(override_dirname[start:i])
            start = i + 1
    items.append(override_dirname[start:])
    return [item for item in items if item]


def run_name(model: str, regularizer: str, override_dirname: str, limit: int = MAX_NAME_BYTES) -> str:
    """A run's folder (and TensorBoard) name: the network first, then the run's other overrides:
    `cnn-bn`, `cnn-bn,seed=1`, `mlp-none,optimizer.lr=0.002`; within `limit` bytes (see job_dirname)."""
    network = ("model", "regularizer")
    others = [o for o in split_overrides(override_dirname) if o.split("=", 1)[0].lstrip("+~") not in network]
    return job_dirname(",".join([f"{model}-{regularizer}", *others]), limit)


def resume_folder(ckpt_path: str | None, new_folder: str) -> str:
    """hydra.run.dir of a run: the folder of the run that ckpt_path resumes (<run>/checkpoints/<file>), so that
    a resume writes (and logs) into its own run's folder; else `new_folder`."""
    if ckpt_path:
        checkpoint = Path(ckpt_path)
        if checkpoint.parent.name == "checkpoints":
            return str(checkpoint.parent.parent)
    return new_folder


# Characters that Hydra's override grammar reads in a value (a run folder's name has , and =), or the shell does.
HYDRA_SPECIAL = frozenset(",=[]{}()'\" \\$")


def command_line_override(key: str, value: object) -> str:
    """`key=value` as a shell command line passes it to Hydra: a value with characters special to Hydra's
    grammar in Hydra's quotes, inside the shell's."""
    text = str(value)
    if not HYDRA_SPECIAL & set(text):
        return f"{key}={text}"
    quoted = f"{key}='{text}'" if "'" not in text else f'{key}="{text}"'
    return f'"{quoted}"' if not set(quoted) & set('"$`\\!') else shlex.quote(quoted)
