"""Against a real SLURM cluster (tools/slurm/local-cluster.sh start makes one on this machine): the sweep of the
nine networks, DDP over SLURM tasks, every way a job is requeued, cancelled, killed or fails, and a stopped sweep.
Marked `slurm` (deselected by default: they take minutes, mostly SLURM's ~30 s hold before a requeued job runs
again); skipped when no SLURM node is idle. Run them with `pytest -m slurm -n 0 tests/test_slurm.py`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from .cluster import (
    FAIL_OVERRIDE,
    FAILURE,
    Process,
    cluster_problem,
    ended_state,
    hold_override,
    job_field,
    record_rank_override,
    slurm_env,
    wait_for_file,
)
from .conftest import ROOT, TRAIN_SIZE, VAL_SIZE, data_overrides, run_script
from .helpers.logs import scalars

pytestmark = [pytest.mark.slurm]

SWEEP_TIMEOUT_S = 900  # generous: other work on the machine slows the jobs; the waits end on what they wait for
# Test machinery and data keys stay out of the job folders' names (the rest as conf/train.yaml has it).
EXCLUDE_KEYS = (
    "hydra.job.config.override_dirname.exclude_keys=[ckpt_path,data.data_dir,data.checksums,data.download,"
    "data.val_size,data.batch_size,data.eval_batch_size,trainer.max_epochs,trainer.accelerator,trainer.precision,"
    "trainer.enable_progress_bar,trainer.enable_model_summary,callbacks.hold,callbacks.record_rank]"
)
# What an interrupted job must end with, exactly as an uninterrupted run (same seed, same single thread).
SAME_NUMBERS = ("test/acc", "test/loss", "best_val/acc", "epochs", "per_class_acc", "confusion_matrix", "exploded")
EPOCHS = 3


@pytest.fixture(autouse=True)
def cluster() -> None:
    if problem := cluster_problem():
        pytest.skip(problem)


def sweep(sweep_dir: Path, *options: str, timeout_min: int = 10, poll_s: int = 5) -> Process:
    """`train.py -m hydra/launcher=slurm` in the background."""
    return Process(
        "train.py", "-m", "hydra/launcher=slurm", f"hydra.launcher.timeout_min={timeout_min}",
        f"hydra.launcher.state_poll_s={poll_s}", EXCLUDE_KEYS, *options, f"hydra.sweep.dir={sweep_dir}",
        cwd=ROOT, log_dir=sweep_dir.parent / f"{sweep_dir.name}-logs", env=slurm_env(),
    )  # fmt: skip


def one_job(sweep_dir: Path) -> Path:
    [run_dir] = [p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")]
    return run_dir


def same_numbers(result: dict, reference: dict) -> None:
    assert {k: result.get(k) for k in SAME_NUMBERS} == {k: reference.get(k) for k in SAME_NUMBERS}


@pytest.fixture(scope="module")
def single_options(synthetic_mnist) -> list[str]:
    return [*data_overrides(*synthetic_mnist), "model=softmax", f"trainer.max_epochs={EPOCHS}"]


@pytest.fixture(scope="module")
def uninterrupted(single_options: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The result of the interrupted jobs' run, trained here in one go."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run_script("train.py", *single_options, f"hydra.run.dir={run_dir}", cwd=ROOT, env=slurm_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "result.json").read_text())


def test_the_nine_networks_as_a_slurm_sweep(synthetic_mnist, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run = sweep(sweep_dir, *data_overrides(*synthetic_mnist), "model=softmax,mlp,cnn", "regularizer=none,dropout,bn")
    code = run.wait(SWEEP_TIMEOUT_S)
    assert code == 0, run.output()[-4000:]
    assert len(list(sweep_dir.glob("*/result.json"))) == 9
    assert "9 of 9 runs complete" in (sweep_dir / "report.md").read_text()
    # submitit's folder: one per array element, each with its job's log and result
    logs = sorted(sweep_dir.glob(".submitit/*_*/*_0_log.out"))
    assert len(logs) == 9 and all(log.stat().st_size > 0 for log in logs)
    assert "Bypassing sacct error" not in run.output()  # the sweep never polls sacct


def test_ddp_over_two_slurm_tasks_trains_like_ddp_cpu(synthetic_mnist, make_cfg, tmp_path: Path) -> None:
    from mnist_study.training.pipeline import train

    config = ("model=mlp", "regularizer=none", "trainer.max_epochs=2", "data.batch_size=25")
    reference = train(make_cfg(*config, "trainer=ddp_cpu", output_dir=tmp_path / "ddp_cpu"))

    sweep_dir, ranks = tmp_path / "sweep", tmp_path / "ranks"
    run = sweep(
        sweep_dir, *data_overrides(*synthetic_mnist), *config, "hydra.launcher.tasks_per_node=2", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", record_rank_override(ranks),
    )  # fmt: skip
    code = run.wait(SWEEP_TIMEOUT_S)
    assert code == 0, run.output()[-4000:]

    run_dir = one_job(sweep_dir)
    assert list(sweep_dir.rglob("result.json")) == [run_dir / "result.json"]
    result = json.loads((run_dir / "result.json").read_text())
    for epoch in (0, 1):
        records = [json.loads((ranks / f"rank{rank}-epoch{epoch}.json").read_text()) for rank in (0, 1)]
        assert [r["environment"] for r in records] == ["SLURMEnvironment"] * 2
        assert [r["world_size"] for r in records] == [2, 2]
        assert [r["images"] for r in records] == [(TRAIN_SIZE - VAL_SIZE) // 2] * 2  # each half of the epoch
    one, two = scalars(tmp_path / "ddp_cpu"), scalars(run_dir)
    assert two["train/loss"] == pytest.approx(one["train/loss"], rel=1e-4)
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-4)
    assert result["test/loss"] == pytest.approx(reference["test/loss"], rel=1e-4)


def run_command(*command: str) -> Callable[[str], None]:
    def act(job: str) -> None:
        subprocess.run([*command, job], check=True, capture_output=True, timeout=60)

    return act


def preempt(job: str) -> None:
    """A job of the higher-priority partition that needs every CPU of the node: SLURM preempts (requeues) ours."""
    subprocess.run(
        ["sbatch", "--partition=urgent", "--cpus-per-task=2", "--output=/dev/null", "--wrap=true"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


REQUEUE_PATHS: dict[str, Callable[[str], None] | None] = {
    "scontrol requeue": run_command("scontrol", "requeue"),
    "scancel --signal=USR1": run_command("scancel", "--signal=USR1"),
    "scancel --signal=USR2": run_command("scancel", "--signal=USR2"),
    "preemption": preempt,
    "time limit": None,  # submitit's USR2 comes signal_delay_s (120 s) before the 3 min limit
}


@pytest.mark.parametrize("path", REQUEUE_PATHS)
def test_a_requeued_job_resumes_and_the_sweep_waits_for_it(
    path: str, single_options: list[str], uninterrupted: dict, tmp_path: Path
) -> None:
    sweep_dir, marker = tmp_path / "sweep", tmp_path / "held"
    run = sweep(sweep_dir, *single_options, hold_override(marker), timeout_min=3 if path == "time limit" else 10)
    job = wait_for_file(marker, run, SWEEP_TIMEOUT_S).split()[1]  # held at the start of epoch 1, epoch 0 saved
    if (act := REQUEUE_PATHS[path]) is not None:
        act(job)
    code = run.wait(SWEEP_TIMEOUT_S)

    assert code == 0, run.output()[-4000:]
    assert int(job_field(job, "Restarts") or 0) >= 1
    run_dir = one_job(sweep_dir)
    same_numbers(json.loads((run_dir / "result.json").read_text()), uninterrupted)
    assert len(scalars(run_dir)["val/acc"]) == EPOCHS  # resumed after the first epoch: none trained twice
    assert not (run_dir / "failed.txt").exists() and not list(run_dir.rglob("hpc_ckpt_*"))
    assert "1 of 1 runs complete" in (sweep_dir / "report.md").read_text()


def test_scancel_leaves_a_record_and_a_checkpoint_and_a_rerun_finishes(
    single_options: list[str], uninterrupted: dict, tmp_path: Path
) -> None:
    sweep_dir, marker = tmp_path / "sweep", tmp_path / "held"
    options = [*single_options, hold_override(marker)]
    run = sweep(sweep_dir, *options)
    job = wait_for_file(marker, run, SWEEP_TIMEOUT_S).split()[1]
    subprocess.run(["scancel", job], check=True, timeout=60)
    code = run.wait(SWEEP_TIMEOUT_S)

    assert code == 1, run.output()[-4000:]
    assert ended_state(job) == "CANCELLED"
    run_dir = one_job(sweep_dir)
    record = (run_dir / "failed.txt").read_text()
    assert record.startswith("terminated by SIGTERM after epoch 1 (checkpoints/last.ckpt holds it); re-run the same "
                             f"command with hydra.sweep.dir={sweep_dir} to resume it")  # fmt: skip
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert "terminated by SIGTERM" in (sweep_dir / "report.md").read_text()

    again = sweep(sweep_dir, *options)  # the same command: the held marker exists, so it does not hold again
    code = again.wait(SWEEP_TIMEOUT_S)
    assert code == 0, again.output()[-4000:]
    same_numbers(json.loads((run_dir / "result.json").read_text()), uninterrupted)
    assert len(scalars(run_dir)["val/acc"]) == EPOCHS


def test_a_failed_ddp_run_fails_its_slurm_job_and_each_rank_keeps_its_record(synthetic_mnist, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run = sweep(
        sweep_dir, *data_overrides(*synthetic_mnist), "model=softmax", "hydra.launcher.tasks_per_node=2",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", FAIL_OVERRIDE,
    )  # fmt: skip
    code = run.wait(SWEEP_TIMEOUT_S)

    assert code == 1, run.output()[-4000:]
    run_dir = one_job(sweep_dir)
    for record in ("failed.txt", "failed.rank1.txt"):
        assert FAILURE in (run_dir / record).read_text().splitlines()[0], record
    [job] = [p.name for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]
    assert ended_state(job) == "FAILED" and job_field(job, "ExitCode") == "1:0"  # the tasks exited with 1
    assert FAILURE in (sweep_dir / "report.md").read_text()


def test_a_job_killed_with_sigkill_ends_the_wait_and_is_reported(single_options: list[str], tmp_path: Path) -> None:
    sweep_dir, marker = tmp_path / "sweep", tmp_path / "held"
    run = sweep(sweep_dir, *single_options, hold_override(marker))
    pid, job = wait_for_file(marker, run, SWEEP_TIMEOUT_S).split()
    subprocess.run(["kill", "-KILL", pid], check=True)  # an OOM kill, a node failure: no Python code runs
    code = run.wait(SWEEP_TIMEOUT_S)  # SLURM here has no accounting: sacct could never say the job ended

    assert code == 1, run.output()[-4000:]
    assert ended_state(job) == "FAILED"
    record = (one_job(sweep_dir) / "failed.txt").read_text()
    assert record.startswith("ended without a result (killed or crashed; SLURM's last state: FAILED)")
    assert "ended without a result" in (sweep_dir / "report.md").read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_waiting_sweep_cancels_its_jobs_and_reports(
    signum: int, single_options: list[str], tmp_path: Path
) -> None:
    sweep_dir, marker = tmp_path / "sweep", tmp_path / "held"
    run = sweep(sweep_dir, *single_options, hold_override(marker))
    job = wait_for_file(marker, run, SWEEP_TIMEOUT_S).split()[1]
    run.proc.send_signal(signum)
    code = run.wait(SWEEP_TIMEOUT_S)

    assert code == 128 + signum, run.output()[-4000:]
    assert ended_state(job) == "CANCELLED"
    assert (one_job(sweep_dir) / "failed.txt").read_text().startswith("terminated by SIGTERM after epoch 1")
    assert (sweep_dir / "report.md").is_file()


def test_srun_starts_the_ranks_of_a_single_run_which_share_one_folder(synthetic_mnist, tmp_path: Path) -> None:
    """A hand-written `srun` (as in an sbatch script; Lightning wants --ntasks-per-node, not --ntasks) instead of
    the launcher: both tasks name the same run folder after the job and step (no hydra.run.dir), and Lightning
    takes their ranks from SLURM."""
    ranks = tmp_path / "ranks"
    command = [
        "srun", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", sys.executable, str(ROOT / "train.py"),
        *data_overrides(*synthetic_mnist), "model=mlp", "trainer.max_epochs=2", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", record_rank_override(ranks), EXCLUDE_KEYS,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, **slurm_env()}, capture_output=True, text=True,
        timeout=SWEEP_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]

    [run_dir] = list((tmp_path / "outputs" / "runs").iterdir())
    assert run_dir.name.startswith("slurm-") and run_dir.name.endswith(".0_mlp-none,trainer.devices=2,trainer=ddp")
    assert list(tmp_path.rglob("result.json")) == [run_dir / "result.json"]
    records = [json.loads((ranks / f"rank{rank}-epoch1.json").read_text()) for rank in (0, 1)]
    assert [(r["environment"], r["world_size"]) for r in records] == [("SLURMEnvironment", 2)] * 2
