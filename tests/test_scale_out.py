"""DDP on two CPU processes, and sweeps through the joblib and submitit launchers."""

from pathlib import Path

import pytest
from lightning import Callback, LightningModule, Trainer

from mnist_study.errors import UserError
from mnist_study.training import pipeline as training
from mnist_study.training.pipeline import check_launch, train

from .conftest import ROOT, TEST_SIZE, TRAIN_SIZE, VAL_SIZE, data_overrides, run_script
from .test_train import assert_logged_metrics_are_the_checkpoints, scalars


class CountTrainingImages(Callback):
    """Each rank writes how many training images it saw per epoch (ddp_spawn ranks are other processes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        path = self.directory / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.txt"
        path.write_text(str(int(module.metrics["train_metric"].count)))  # before the module resets it


def test_two_cpu_processes_train_like_one(make_cfg, tmp_path: Path, add_callback) -> None:
    # Each rank's batch of 25 is every other image of the single process's batch of 50, and DDP averages the
    # two halves' gradients: the same steps as one process, up to the order of float additions.
    config = ("model=mlp", "regularizer=none", "trainer.max_epochs=2")
    single = train(make_cfg(*config, "data.batch_size=50", output_dir=tmp_path / "one"))
    add_callback(CountTrainingImages(tmp_path))
    double = train(make_cfg(*config, "data.batch_size=25", "trainer=ddp_cpu", output_dir=tmp_path / "two"))

    one, two = scalars(tmp_path / "one"), scalars(tmp_path / "two")
    assert two["train/loss"] == pytest.approx(one["train/loss"], rel=1e-4)
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-4)
    assert double["test/acc"] == pytest.approx(single["test/acc"], abs=1.01 / TEST_SIZE)  # one image at most
    assert double["exploded"] is False  # there after ddp_spawn too: it comes back with callback_metrics
    for epoch in (0, 1):
        seen = [int((tmp_path / f"rank{rank}-epoch{epoch}.txt").read_text()) for rank in (0, 1)]
        assert seen == [(TRAIN_SIZE - VAL_SIZE) // 2] * 2  # disjoint halves: each image once per epoch

    # The logged validation metrics are those of the whole split, combined exactly across the two ranks.
    assert_logged_metrics_are_the_checkpoints(tmp_path / "two", make_cfg(*config))


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sweeps_run_through_launchers(synthetic_mnist, tmp_path: Path, launcher: str) -> None:
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    result = run_script(
        "train.py", "-m", f"hydra/launcher={launcher}", *extra, *data_overrides(*synthetic_mnist),
        "model=softmax,mlp", f"hydra.sweep.dir={tmp_path}", cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for model in ("softmax", "mlp"):
        run = next(tmp_path.glob(f"{model}-*"))
        assert (run / "result.json").is_file() and list(run.glob("events.out.tfevents.*"))
    assert "2 of 2 runs complete" in (tmp_path / "report.md").read_text()


def test_ddp_relaunch_is_refused_inside_a_local_sweep(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    # A sweep job's UserError is recorded and reported (test_report.py::test_a_failing_job_does_not_stop_the_sweep)
    cfg = make_cfg("trainer=ddp_cpu", "trainer.strategy=ddp")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    check_launch(cfg)  # a single run may: Lightning re-runs its command line for the other rank
    monkeypatch.setattr(training, "in_multirun", lambda: True)
    with pytest.raises(UserError, match=r"trainer\.strategy=ddp cannot start its ranks inside a -m sweep"):
        check_launch(cfg)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # under SLURM, srun starts the ranks
    check_launch(cfg)
