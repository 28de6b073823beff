"""Run folders stay what they hold: a "/" in an override never nests a folder, a finished run's folder is never
taken over by another configuration, a retrain from scratch starts from an emptied folder, and a run refused inside
its job leaves no empty folder behind."""

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from mnist_study.errors import UserError
from mnist_study.runs.ending import run_task
from mnist_study.runs.names import run_name
from mnist_study.training.pipeline import train

from .conftest import CONF, ROOT, compose_train, data_overrides, run_script


def test_a_slash_in_an_override_never_nests_the_run_folder() -> None:
    stop = "+callbacks.stop={_target_:lightning.pytorch.callbacks.EarlyStopping,monitor:val/acc,mode:max}"
    name = run_name("cnn", "none", f"model=cnn,{stop}")
    assert "/" not in name and "monitor:val%2Facc" in name
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=mlp", stop, "hydra.sweep.dir=sweeps/x"], return_hydra_config=True)
        assert "/" not in str(cfg.hydra.sweep.subdir) and Path(cfg.hydra.run.dir).parent == Path("outputs/runs")


@pytest.fixture(scope="module")
def finished_folder(synthetic_mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished single run of train.py, as `train.py ... hydra.run.dir=<it>` leaves it (.hydra/config.yaml)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    cfg = compose_train(synthetic_mnist, "model=softmax", output_dir=run_dir)
    run_task(train, cfg)  # which lets go of the folder's lock at the end, as train.py does
    (run_dir / ".hydra").mkdir()
    with open_dict(cfg):
        cfg.output_dir = "${hydra:runtime.output_dir}"  # as Hydra saves it, unresolved
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def test_a_finished_run_folder_is_not_taken_over_by_another_config(synthetic_mnist, finished_folder: Path) -> None:
    from mnist_study.training.preflight import check_train_command_line

    same = [*data_overrides(*synthetic_mnist), "model=softmax", f"hydra.run.dir={finished_folder}"]
    assert check_train_command_line(same, CONF) == 1  # the same command: it reads the result back
    with pytest.raises(UserError) as raised:
        check_train_command_line([*same, "optimizer.lr=0.01"], CONF)
    assert str(raised.value).startswith(
        f"hydra.run.dir={finished_folder} holds a finished run with optimizer.lr=${{tuned_lr.${{model.name}}}}, this "
        "command has optimizer.lr=0.01: a finished run is never overwritten; choose another hydra.run.dir"
    )


def test_the_command_line_refuses_to_reuse_a_finished_folder_before_writing_in_it(
    synthetic_mnist, finished_folder: Path
) -> None:
    config = (finished_folder / ".hydra" / "config.yaml").read_text()
    result = run_script(
        "train.py", *data_overrides(*synthetic_mnist), "model=mlp", f"hydra.run.dir={finished_folder}", cwd=ROOT
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: hydra.run.dir={finished_folder} holds a finished run with model")
    assert (finished_folder / ".hydra" / "config.yaml").read_text() == config  # still matches its result.json


def test_a_retrain_from_scratch_starts_from_an_emptied_folder(make_cfg, tmp_path: Path) -> None:
    """A job whose earlier attempt failed (its events, checkpoints and failure record are there) trains anew."""
    job = tmp_path / "job"
    train(make_cfg("model=softmax", "trainer.max_epochs=2", output_dir=job))
    (job / "result.json").unlink()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"cut short")  # unreadable: the job trains from scratch
    (job / "failed.txt").write_text("terminated by SIGKILL\n")
    earlier = sorted(p.name for p in job.iterdir() if p.name != "run.lock")
    train(make_cfg("model=softmax", "trainer.max_epochs=2", output_dir=job))

    (previous,) = job.glob("previous-*")
    assert sorted(p.name for p in previous.iterdir()) == earlier  # everything of the earlier attempt, kept
    assert len(list(job.glob("events.out.tfevents.*"))) == 1  # the new run's own
    best, last = sorted(p.name for p in (job / "checkpoints").iterdir())  # the new run's alone
    assert best.startswith("best-epoch") and last == "last.ckpt"
    assert not (job / "failed.txt").exists() and (job / "result.json").is_file()


def test_an_error_found_inside_a_run_leaves_no_empty_run_folder(synthetic_mnist, tmp_path: Path) -> None:
    """A data file damaged after the check that runs before Hydra: the run's folder was made, then is removed."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_mnist[0], data)
    damaged = next((data / "MNIST" / "raw").iterdir())
    damaged.write_bytes(damaged.read_bytes()[:-3])
    options = [*data_overrides(*synthetic_mnist)[1:], f"data.data_dir={data}", "model=softmax"]
    result = run_script("train.py", *options, f"hydra.run.dir={tmp_path / 'run'}", cwd=ROOT)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(f"error: {damaged}")
    assert not (tmp_path / "run").exists()


def test_a_value_refused_once_the_data_is_read_leaves_no_run_folder(synthetic_mnist, tmp_path: Path) -> None:
    """data.val_size beyond the training set is found when the data is set up, after Lightning opened the run's
    event file: the folder holds nothing of value and goes."""
    options = [*data_overrides(*synthetic_mnist), "model=softmax", "data.val_size=1000000"]
    result = run_script("train.py", *options, f"hydra.run.dir={tmp_path / 'run'}", cwd=ROOT)
    assert result.returncode == 1 and "error: data.val_size=1000000 leaves no training images" in result.stderr
    assert not (tmp_path / "run").exists()
