"""Run folder names: the network first, then the run's other overrides, always one valid file name."""

from __future__ import annotations

import hashlib

MAX_NAME_BYTES = 255  # a file name's limit on ext4, xfs, btrfs, NFS
HASH_CHARS = 10


def job_dirname(override_dirname: str, limit: int = MAX_NAME_BYTES) -> str:
    """`override_dirname` when it fits in `limit` bytes, else its start and a hash of the whole (the full
    overrides stay in the job's .hydra/overrides.yaml). Deterministic: the same command finds the same folder."""
    encoded = override_dirname.encode()
    if len(encoded) <= limit:
        return override_dirname
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
