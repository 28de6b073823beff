"""Two runs never share a folder, two sweeps never train the same job, a dead run's lock is taken over, and job
folder names stay under the file system's 255-byte limit."""

import logging
import socket
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_study.runs.artifacts import LOCK_FILE
from mnist_study.runs.locks import FolderLock, holder_of
from mnist_study.runs.names import MAX_NAME_BYTES, job_dirname, run_name
from mnist_study.training.pipeline import train

from .conftest import CONF, ROOT, data_overrides, run_script
from .helpers.overrides import EXCLUDE_KEYS
from .pause import Run, pause_override


def test_job_dirname_keeps_a_short_name_and_cuts_a_long_one_with_a_hash_of_the_whole() -> None:
    assert job_dirname("model=mlp,seed=1") == "model=mlp,seed=1"
    long = ",".join(f"+tuned_lr.m{i}=0.00{i}é" for i in range(60))
    short = job_dirname(long)
    assert len(short.encode()) <= MAX_NAME_BYTES and short.startswith(long[:100])
    assert job_dirname(long) == short  # the same command finds the same folder
    assert job_dirname(long[:-1] + "7") != short
    cut = job_dirname("é" * 200)  # 400 bytes: cut on a character boundary
    assert len(cut.encode()) <= MAX_NAME_BYTES and set(cut.rsplit("_", 1)[0]) == {"é"}


def test_run_folders_have_microseconds_and_sweep_jobs_the_short_name() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=mlp"], return_hydra_config=True)
    hydra = OmegaConf.to_container(cfg.hydra)  # unresolved
    assert "%f" in hydra["run"]["dir"]  # type: ignore[index]
    assert "${run_name:${model.name},${regularizer.name},${hydra.job.override_dirname}" in hydra["run"]["dir"]  # type: ignore[index]
    assert hydra["sweep"]["subdir"] == "${run_name:${model.name},${regularizer.name},${hydra.job.override_dirname}}"  # type: ignore[index]
    assert "experiment" in hydra["job"]["config"]["override_dirname"]["exclude_keys"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("override_dirname", "name"),
    [
        ("model=cnn,regularizer=bn", "cnn-bn"),
        ("model=cnn,regularizer=bn,seed=1", "cnn-bn,seed=1"),
        ("model=mlp,optimizer.lr=0.002", "mlp-none,optimizer.lr=0.002"),
        ("model.channels=[16,32],model=cnn", "cnn-none,model.channels=[16,32]"),
    ],
)
def test_runs_are_named_by_their_network_first(override_dirname: str, name: str) -> None:
    model, regularizer = name.split(",")[0].split("-")
    assert run_name(model, regularizer, override_dirname) == name


def test_a_sweep_with_many_overrides_names_its_job_folder_within_255_bytes(synthetic_mnist, tmp_path: Path) -> None:
    many = [f"+tuned_lr.a_model_with_a_rather_long_name_{i}=0.001" for i in range(10)]
    result = run_script(
        "train.py", "-m", *data_overrides(*synthetic_mnist), "model=softmax", *many, f"hydra.sweep.dir={tmp_path}",
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = [p.parent.parent for p in tmp_path.glob("*/.hydra/overrides.yaml")]
    assert len(job.name.encode()) <= MAX_NAME_BYTES and (job / "result.json").is_file()
    assert set(many) <= set(OmegaConf.load(job / ".hydra" / "overrides.yaml"))  # the full overrides are kept


def test_a_run_refuses_a_folder_that_a_live_run_holds(synthetic_mnist, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    options = [*data_overrides(*synthetic_mnist), "model=softmax", f"hydra.run.dir={run_dir}"]
    first = Run("train.py", *options, pause_override(epoch=0), cwd=ROOT, log_dir=tmp_path)
    pid = first.wait_paused()

    second = run_script("train.py", *options, "seed=1", cwd=ROOT)
    assert second.returncode == 1
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"error: {run_dir} is in use by another live run (pid {pid} on {socket.gethostname()} ")
    assert "seed=1" not in (run_dir / ".hydra" / "overrides.yaml").read_text()  # refused before Hydra wrote there

    code, _, stderr = first.finish()
    assert code == 0, stderr[-3000:]
    assert (run_dir / "result.json").is_file() and holder_of(run_dir) is None


def test_the_lock_of_a_killed_run_is_taken_over(make_cfg, tmp_path: Path, caplog) -> None:
    run_dir = tmp_path / "run"
    holder = Run(
        "-c", "import sys; from pathlib import Path; from mnist_study.runs.locks import FolderLock; "
        f"FolderLock(Path({str(run_dir)!r})); print('PAUSED pid=0', flush=True); sys.stdin.readline()",
        cwd=ROOT, log_dir=tmp_path,
    )  # fmt: skip
    holder.wait_paused()
    assert holder_of(run_dir) is not None
    holder.proc.kill()  # SIGKILL: no clean-up ran, the lock file still names the dead process
    holder.proc.wait()
    assert (run_dir / LOCK_FILE).read_text().startswith(f"pid {holder.proc.pid} ")

    with caplog.at_level(logging.INFO, logger="mnist_study.runs.locks"):
        train(make_cfg("model=softmax", output_dir=run_dir))
    assert "taking over the lock of a run that ended without releasing it" in caplog.text
    assert (run_dir / "result.json").is_file()


def test_a_lock_is_exclusive_between_open_files_and_released_on_release(tmp_path: Path) -> None:
    lock = FolderLock(tmp_path)
    assert holder_of(tmp_path) == (tmp_path / LOCK_FILE).read_text().strip()
    lock.release()
    assert holder_of(tmp_path) is None and not (tmp_path / LOCK_FILE).exists()  # no stale lock file is left
    again = FolderLock(tmp_path)  # the folder can be locked again, in a new file
    assert holder_of(tmp_path) is not None
    again.release()


def test_two_sweeps_into_one_folder_never_train_the_same_job(synthetic_mnist, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    options = [*data_overrides(*synthetic_mnist), EXCLUDE_KEYS, f"hydra.sweep.dir={sweep_dir}"]
    first = Run("train.py", "-m", *options, "model=softmax", pause_override(epoch=0), cwd=ROOT, log_dir=tmp_path)
    pid = first.wait_paused()  # training the softmax job, holding its folder

    second = run_script("train.py", "-m", *options, "model=softmax,mlp", cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]  # nothing failed: one job done, one held by the other
    output = second.stdout + second.stderr
    softmax, mlp = (next(sweep_dir.glob(f"{model}-*")) for model in ("softmax", "mlp"))
    assert f"skipped: {softmax} is in use by another live run (pid {pid}" in output
    assert f"report: not written yet: 1 job(s) of {sweep_dir} are being trained by another live process" in output
    assert f"{softmax.name} (pid {pid} " in output  # which job, held by whom
    assert (mlp / "result.json").is_file() and not (softmax / "result.json").exists()
    assert not (softmax / "failed.txt").exists()  # nothing written into the folder the other sweep owns
    assert not (sweep_dir / "report.md").exists()  # no report that calls a running job missing

    code, _, stderr = first.finish()
    assert code == 0, stderr[-3000:]  # it ends last, so it writes the report: both jobs done, one by each sweep
    assert (softmax / "result.json").is_file()
    assert "2 of 2 runs complete" in (sweep_dir / "report.md").read_text()
