"""Seconds per epoch of this project's train.py against ashleve/lightning-hydra-template's src/train.py, training
the same network: the template's default MNIST model, a 784-64-128-64-10 MLP with batch normalization, Adam at
0.001, batch size 128, in fp32 on the CPU; each side otherwise with its own defaults. Set-up and the exact commands:
benchmarks/TEMPLATE.md (make bench-template TEMPLATE=<a checkout of the template with its .venv>).

    python benchmarks/template_side.py --template /work/template --template-python /work/template/.venv/bin/python
        [--project .] [--project-python PYTHON] [--data-dir DIR] [--rounds 5]
        [--template-arg KEY=VALUE ...] [--project-arg KEY=VALUE ...]

Each side's seconds per epoch is (wall time of its train.py with max_epochs=3 - with max_epochs=1) / 2, so start-up,
the test run after fit and whatever else a run does once cancel out. The sides take turns (template, project,
template, project, ...); the median of each side and of the per-round ratios project / template (with their range)
are printed. Both sides read the same MNIST IDX files (<data-dir>/MNIST/raw) and write into temporary folders.
The two programs run as subprocesses only: nothing of either is imported here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SHORT_EPOCHS, LONG_EPOCHS = 1, 3

# The template's default run, only told where the data is and where to write.
TEMPLATE_ARGS = ["trainer=cpu"]
# The project's default run (what a user gets) with the template's network: Adam at the MLP's tuned rate, 0.001,
# as the template's; batch size 128, as the template's; the one-cycle schedule; precision=auto, which keeps a
# network this small in fp32, as the template's.
PROJECT_ARGS = ["model=mlp", "model.hidden_sizes=[64,128,64]", "regularizer=bn"]


def template_command(args: argparse.Namespace, epochs: int, out: Path) -> list[str]:
    return [
        str(args.template_python),
        "src/train.py",
        *TEMPLATE_ARGS,
        f"trainer.max_epochs={epochs}",
        f"paths.data_dir={args.data_dir}",
        f"paths.log_dir={out}",
        *args.template_arg,
    ]


def project_command(args: argparse.Namespace, epochs: int, out: Path) -> list[str]:
    return [
        str(args.project_python),
        "train.py",
        *PROJECT_ARGS,
        f"trainer.max_epochs={epochs}",
        f"data.data_dir={args.data_dir}",
        f"hydra.run.dir={out}",
        *args.project_arg,
    ]


def template_env() -> dict[str, str]:
    # Upstream incompatibility: the template saves its network module in the checkpoint's hyper-parameters, and
    # torch >= 2.6 loads checkpoints with weights_only=True, so its test-after-fit fails to load the checkpoint the
    # run itself just wrote. This torch switch restores weights_only=False where the caller did not choose.
    return os.environ | {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def project_env(project: Path) -> dict[str, str]:
    # The project's own source first, whichever checkout the interpreter's editable install points to.
    python_path = os.pathsep.join(filter(None, [str(project / "src"), os.environ.get("PYTHONPATH")]))
    return os.environ | {"PYTHONPATH": python_path}


def run_seconds(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    with log.open("w") as output:
        start = time.perf_counter()
        finished = subprocess.run(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, check=False)
        seconds = time.perf_counter() - start
    if finished.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"{' '.join(command)}\n(in {cwd}) exited with {finished.returncode}; its last lines:\n{tail}")
    return seconds


def seconds_per_epoch(side: str, args: argparse.Namespace) -> float:
    if side == "template":
        build, cwd, env = template_command, args.template, template_env()
    else:
        build, cwd, env = project_command, args.project, project_env(args.project)
    with tempfile.TemporaryDirectory(prefix=f"{side}-") as scratch:
        times = {}
        for epochs in (SHORT_EPOCHS, LONG_EPOCHS):
            out = Path(scratch) / f"epochs{epochs}"
            times[epochs] = run_seconds(build(args, epochs, out), cwd, env, Path(scratch) / f"epochs{epochs}.log")
    return (times[LONG_EPOCHS] - times[SHORT_EPOCHS]) / (LONG_EPOCHS - SHORT_EPOCHS)


def git_commit(repo: Path) -> str:
    found = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return found.stdout.strip() or "not a git checkout"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, required=True, help="a lightning-hydra-template checkout")
    parser.add_argument("--template-python", type=Path, required=True, help="the template's venv python")
    parser.add_argument("--project", type=Path, default=Path(__file__).resolve().parents[1], help="this project")
    parser.add_argument("--project-python", type=Path, default=Path(sys.executable), help="the project's python")
    parser.add_argument("--data-dir", type=Path, help="holds MNIST/raw/*-ubyte (default: <project>/data)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both sides (default 5)")
    parser.add_argument("--template-arg", action="append", default=[], help="one more override for the template")
    parser.add_argument("--project-arg", action="append", default=[], help="one more override for the project")
    args = parser.parse_args()
    args.template, args.project = args.template.resolve(), args.project.resolve()
    args.data_dir = (args.data_dir or args.project / "data").resolve()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if not (args.template / "src" / "train.py").is_file():
        parser.error(f"--template {args.template} has no src/train.py: give a lightning-hydra-template checkout")
    for option, python in (("--template-python", args.template_python), ("--project-python", args.project_python)):
        if not python.is_file():
            parser.error(f"{option} {python} is not a file: give a python interpreter")
    if not (args.project / "train.py").is_file():
        parser.error(f"--project {args.project} has no train.py: give this project's root")
    missing = [name for name in IDX_FILES if not (args.data_dir / "MNIST" / "raw" / name).is_file()]
    if missing:  # the template would try to download them
        raw = args.data_dir / "MNIST" / "raw"
        parser.error(f"--data-dir {args.data_dir}: {raw} lacks {', '.join(missing)}: run the project's train.py once")
    return args


def main() -> None:
    args = parse_args()
    print(f"template {args.template} at {git_commit(args.template)}")
    print(f"project  {args.project} at {git_commit(args.project)}")
    for side, build in (("template", template_command), ("project", project_command)):
        print(f"{side}: {' '.join(build(args, LONG_EPOCHS, Path('<tmp>')))}")
    seconds: dict[str, list[float]] = {"template": [], "project": []}
    for round_number in range(1, args.rounds + 1):
        for side in seconds:
            seconds[side].append(seconds_per_epoch(side, args))
        template, project = seconds["template"][-1], seconds["project"][-1]
        print(f"round {round_number}: template {template:.2f} s/epoch, project {project:.2f} s/epoch, ", end="")
        print(f"project / template {project / template:.3f}", flush=True)
    template, project = statistics.median(seconds["template"]), statistics.median(seconds["project"])
    ratios = [p / t for t, p in zip(seconds["template"], seconds["project"], strict=True)]
    print(f"median over {args.rounds} rounds: template {template:.2f} s/epoch, project {project:.2f} s/epoch")
    print(f"project / template: {statistics.median(ratios):.3f} (per round {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
