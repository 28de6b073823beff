"""A stopped run never looks like a success: real SIGTERM/SIGINT sent to train.py subprocesses held at an epoch
start by tests.pause (pipes, not sleeps), and the SLURM case where SIGTERM stays Lightning's and SIGUSR1 requeues."""

import os
import shlex
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mnist_study.runs import slurm
from mnist_study.runs.ending import run_task
from mnist_study.runs.signals import StopGuard, run_main, stop_guard

from .conftest import ROOT, data_overrides
from .helpers.logs import scalars
from .helpers.overrides import EXCLUDE_KEYS
from .pause import Run, pause_override


# The pause is test machinery: it must not change the job folders' names, so a re-run finds them.
def last_epoch(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]


def test_sigterm_stops_a_run_with_143_a_record_and_the_last_finished_epoch_which_resumes(
    synthetic_mnist, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    options = [*data_overrides(*synthetic_mnist), "model=softmax", "trainer.max_epochs=3"]
    run = Run("train.py", *options, pause_override(epoch=1), f"hydra.run.dir={run_dir}", cwd=ROOT, log_dir=tmp_path)
    pid = run.wait_paused()  # epoch 0 is finished and saved
    run.proc.send_signal(signal.SIGTERM)
    assert pid == run.proc.pid
    code, _, stderr = run.finish()  # the pause goes on; Lightning stops after the step it is in

    assert code == 143
    record = (run_dir / "failed.txt").read_text().strip()
    assert record.startswith("terminated by SIGTERM after epoch 1 (checkpoints/last.ckpt holds it); resume it with: ")
    assert stderr.strip().splitlines()[-1] == f"error: {record}"
    assert last_epoch(run_dir) == 0 and not (run_dir / "result.json").exists()

    # The record's command resumes the run in its own folder (hydra.run.dir: keep outputs/ of the repo clean).
    command = shlex.split(record.split("resume it with: ", 1)[1])
    assert command[:2] == ["python", "train.py"]
    resumed = Run(*command[1:], f"hydra.run.dir={tmp_path / 'resume'}", cwd=ROOT, log_dir=tmp_path)
    code, _, stderr = resumed.finish()  # its pause at epoch 1 reads the end of stdin and goes on
    assert code == 0, stderr[-3000:]
    assert (run_dir / "result.json").is_file() and not (run_dir / "failed.txt").exists()
    assert len(scalars(run_dir)["val/acc"]) == 3


def test_sigint_stops_a_run_with_130_and_a_record(synthetic_mnist, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    options = [*data_overrides(*synthetic_mnist), "model=softmax", "trainer.max_epochs=2", pause_override(epoch=1)]
    run = Run("train.py", *options, f"hydra.run.dir={run_dir}", cwd=ROOT, log_dir=tmp_path)
    run.wait_paused()
    run.proc.send_signal(signal.SIGINT)
    code, _, _ = run.finish()
    assert code == 130
    assert (run_dir / "failed.txt").read_text().startswith("terminated by SIGINT after epoch 1")
    assert last_epoch(run_dir) == 0


def test_sigterm_stops_a_sweep_which_still_reports_and_a_rerun_finishes_it(synthetic_mnist, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    options = [*data_overrides(*synthetic_mnist), "model=softmax,mlp", "trainer.max_epochs=2", EXCLUDE_KEYS]
    sweep = Run("train.py", "-m", *options, pause_override(epoch=1), f"hydra.sweep.dir={sweep_dir}", cwd=ROOT,
                log_dir=tmp_path)  # fmt: skip
    sweep.wait_paused()  # the first job (softmax) after its epoch 0
    sweep.proc.send_signal(signal.SIGTERM)
    code, _, stderr = sweep.finish()

    assert code == 143, stderr[-3000:]
    softmax, mlp = (next(sweep_dir.glob(f"{model}-*")) for model in ("softmax", "mlp"))
    assert (
        (softmax / "failed.txt")
        .read_text()
        .startswith(
            f"terminated by SIGTERM after epoch 1 (checkpoints/last.ckpt holds it); re-run the same command with "
            f"hydra.sweep.dir={sweep_dir} to resume it"
        )
    )
    assert (mlp / "failed.txt").read_text().startswith("not started: the sweep was stopped by SIGTERM")
    assert not (mlp / "checkpoints").exists()
    report = (sweep_dir / "report.md").read_text()
    assert "terminated by SIGTERM" in report and "not started" in report

    again = Run("train.py", "-m", *options, f"hydra.sweep.dir={sweep_dir}", cwd=ROOT, log_dir=tmp_path)
    code, _, stderr = again.finish()
    assert code == 0, stderr[-3000:]
    assert len(scalars(softmax)["val/acc"]) == 2  # resumed: epoch 0 was not trained twice
    assert (softmax / "result.json").is_file() and (mlp / "result.json").is_file()


def fake_scontrol(tmp_path: Path, answer: str = "") -> tuple[Path, Path]:
    """A `scontrol` that records its arguments and prints `answer`: (its folder, for PATH; the file of calls)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls.txt"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "{answer}"\n')
    (bin_dir / "scontrol").chmod(0o755)
    return bin_dir, calls


def test_under_slurm_sigusr1_requeues_the_job_and_its_sigterm_stops_the_run(synthetic_mnist, tmp_path: Path) -> None:
    """SLURM's variables make Lightning pick SLURMEnvironment, with its auto-requeue turned off (no HPC
    checkpoint); the project's SIGUSR1 handler asks a fake `scontrol` for the requeue, whose SIGTERM then ends
    the run through Lightning's own handler."""
    bin_dir, calls = fake_scontrol(tmp_path)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "pytest", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "PATH": f"{bin_dir}:/usr/bin:/bin"}  # fmt: skip
    run_dir = tmp_path / "run"
    options = [*data_overrides(*synthetic_mnist), "model=softmax", "trainer.max_epochs=2", pause_override(epoch=1)]
    run = Run("train.py", *options, f"hydra.run.dir={run_dir}", cwd=ROOT, log_dir=tmp_path, env=slurm)
    run.wait_paused()
    run.proc.send_signal(signal.SIGUSR1)  # scancel --signal=USR1: a requeue asked for
    run.proc.send_signal(signal.SIGTERM)  # then the requeue's stop; Python runs the handlers in signal-number order
    code, _, stderr = run.finish()

    assert calls.read_text().split() == ["requeue", "4242"]
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt")), "Lightning's mid-step requeue checkpoint, which nothing reads"
    assert code == 143, stderr[-3000:]
    assert (run_dir / "failed.txt").read_text().startswith("terminated by SIGTERM after epoch 1")


@pytest.mark.parametrize(("restarts", "restart_count", "requeued"), [("1", None, True), ("0", None, False),
                                                                    ("1", "1", False), ("2", "1", True)])  # fmt: skip
def test_a_job_being_requeued_is_told_from_one_ending_by_its_restart_count(
    restarts: str, restart_count: str | None, requeued: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, calls = fake_scontrol(tmp_path, f"JobId=4242 JobState=COMPLETING Reason=None Restarts={restarts}")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    if restart_count is None:
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    else:
        monkeypatch.setenv("SLURM_RESTART_COUNT", restart_count)
    assert slurm.being_requeued() is requeued
    assert calls.read_text().split() == ["--oneliner", "show", "job", "4242"]


def test_the_guard_leaves_sigterm_alone_under_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    guard = StopGuard()
    assert guard.install()
    try:
        assert signal.getsignal(signal.SIGTERM) is before
        assert signal.getsignal(signal.SIGINT) == guard.handle
        assert signal.getsignal(signal.SIGUSR1) == guard.handle
    finally:
        guard.uninstall()
    monkeypatch.delenv("SLURM_JOB_ID")
    assert StopGuard().handled_signals == (signal.SIGTERM, signal.SIGINT)


def test_ctrl_c_after_the_run_finished_says_its_results_are_whole(caplog: pytest.LogCaptureFixture) -> None:
    def main() -> None:  # an entry point: the run's task, then Hydra ending the run
        run_task(lambda cfg: None, OmegaConf.create())
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next line

    guard = stop_guard()
    try:
        with pytest.raises(SystemExit) as stopped:
            run_main(main)
    finally:
        guard.uninstall()
        guard.signum, guard.task_finished = None, False
    assert stopped.value.code == 130  # a script or sweep still learns of the signal
    assert "received SIGINT after the run had finished: its results are whole" in caplog.text
