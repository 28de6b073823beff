"""Run folder names: the network first, then the run's other overrides, always one valid file name."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from mnist_study.errors import UserError

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


def shared_run_id(environ: Mapping[str, str] = os.environ) -> str | None:
    """What every process of one run shares when a launcher starts them all, on one node or several: torchrun's
    rendezvous id (--rdzv-id; "none" when not given), or the SLURM job and step of `srun`, which a requeued job
    keeps (so it finds its folder again). None for a process started on its own."""
    if (rendezvous := environ.get("TORCHELASTIC_RUN_ID", "none")) != "none":
        return "torchrun-" + re.sub(r"[^\w.-]", "_", rendezvous)
    if "SLURM_JOB_ID" in environ and "SLURM_STEP_ID" in environ:
        return f"slurm-{environ['SLURM_JOB_ID']}.{environ['SLURM_STEP_ID']}"
    return None


def run_stamp(pattern: str) -> str:
    """The start of a single run's folder name: the shared run id of a run whose processes a launcher started,
    else the time now in `pattern` (a resolver with use_cache: one value per process, as Hydra's `now`)."""
    return shared_run_id() or datetime.now().strftime(pattern)


def check_shared_run_folder(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> None:
    """The processes of one run must write into one folder: refuse, before anything starts, a torchrun run whose
    processes would each name their own (no --rdzv-id and no hydra.run.dir)."""
    if any(arg in ("-m", "--multirun") or arg.lstrip("+").startswith("hydra.run.dir=") for arg in argv):
        return
    processes = int(environ.get("WORLD_SIZE", "1"))
    if "TORCHELASTIC_RUN_ID" in environ and processes > 1 and shared_run_id(environ) is None:
        raise UserError(
            f"torchrun starts {processes} processes of this run and each would name its own run folder: give "
            "torchrun --rdzv-id=<a name for this run> (the same on every node; the folder is then "
            "outputs/runs/torchrun-<name>_<network>), or pass the same hydra.run.dir=<folder> to every process"
        )
