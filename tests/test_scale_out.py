"""DDP on two CPU processes, two torchrun nodes, sweeps through the joblib and submitit launchers, and what the
SLURM launcher refuses before it submits anything (the runs on a real cluster: tests/test_slurm.py)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lightning import Callback, LightningModule, Trainer

from mnist_study.config.launch import SPAWN_UNDER_SLURM, check_slurm_job
from mnist_study.errors import UserError
from mnist_study.runs.names import check_shared_run_folder, shared_run_id
from mnist_study.training import pipeline as training
from mnist_study.training.pipeline import check_launch, train

from .conftest import CONF, ROOT, TEST_SIZE, TRAIN_SIZE, VAL_SIZE, data_overrides, run_script
from .helpers.logs import assert_logged_metrics_are_the_checkpoints, scalars


class CountTrainingImages(Callback):
    """Each rank writes how many training images it saw per epoch (ddp_spawn ranks are other processes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        path = self.directory / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.txt"
        path.write_text(str(int(module.metrics["train_metric"].count)))  # before the module resets it


@pytest.mark.slow  # ~25 s: spawned ranks import everything again; the torchrun test below checks DDP in the suite
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_torchrun_nodes_train_one_run_like_one_process(synthetic_mnist, make_cfg, tmp_path: Path) -> None:
    """Two torchrun agents on this machine, one process each, as two nodes of one run (c10d rendezvous): the
    ranks come from torchelastic's environment, the run folder from the rendezvous id, the numbers from DDP: those
    of one process with both ranks' batches (each rank's batch of 25 is every other image of the one process's
    batch of 50, and DDP averages the two halves' gradients), up to the order of float additions."""
    config = ("model=mlp", "regularizer=none", "trainer.max_epochs=2")
    reference = train(make_cfg(*config, "data.batch_size=50", output_dir=tmp_path / "one"))

    nodes, port = tmp_path / "nodes", free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", "--rdzv-id=study"]  # fmt: skip
    train_options = [str(ROOT / "train.py"), *data_overrides(*synthetic_mnist), *config, "data.batch_size=25",
                     "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"]  # fmt: skip
    nodes.mkdir()
    source = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": source}
    logs = [nodes / f"node{rank}.log" for rank in (0, 1)]
    processes = []
    for rank, log in enumerate(logs):
        with open(log, "w") as output:  # files, not pipes: a full pipe would stall one node and so both
            command = [*torchrun, f"--node-rank={rank}", *train_options]
            processes.append(subprocess.Popen(command, cwd=nodes, env=environment, stdout=output, stderr=output))
    codes = [process.wait(timeout=600) for process in processes]
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)

    [run_dir] = list((nodes / "outputs" / "runs").iterdir())  # one folder for both nodes' processes
    assert run_dir.name.startswith("torchrun-study_mlp-none")
    assert list(nodes.rglob("result.json")) == [run_dir / "result.json"]
    assert "MEMBER: 2/2" in "".join(log.read_text() for log in logs)  # Lightning's ranks 0 and 1 of 2
    one, two = scalars(tmp_path / "one"), scalars(run_dir)
    assert two["train/loss"] == pytest.approx(one["train/loss"], rel=1e-4)
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-4)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["test/loss"] == pytest.approx(reference["test/loss"], rel=1e-4)
    assert result["exploded"] is False
    # The logged validation metrics are those of the whole split, combined exactly across the two ranks.
    assert_logged_metrics_are_the_checkpoints(run_dir, make_cfg(*config))


def test_a_gloo_process_group_is_destroyed_while_the_interpreter_is_alive(tmp_path: Path) -> None:
    """Left to the interpreter's finalization, a gloo group can abort a finished rank (training/upstream.py)."""
    code = (
        "import atexit, sys, torch.distributed as dist\n"
        "from mnist_study.training.upstream import destroy_process_group_at_exit\n"
        "atexit.register(lambda: print('initialized at exit:', dist.is_initialized()))  # LIFO: runs last\n"
        "dist.init_process_group('gloo', init_method='file://' + sys.argv[1], rank=0, world_size=1)\n"
        "destroy_process_group_at_exit()\n"
        "destroy_process_group_at_exit()  # once per job of a sweep\n"
    )
    script = tmp_path / "group.py"
    script.write_text(code)
    result = run_script(str(script), str(tmp_path / "store"), cwd=ROOT)
    assert (result.returncode, result.stdout.strip()) == (0, "initialized at exit: False"), result.stderr


def test_a_torchrun_run_without_a_shared_folder_is_refused_in_one_line() -> None:
    torchrun = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "RANK": "0"}  # torchrun without --rdzv-id
    result = run_script("train.py", "model=softmax", cwd=ROOT, env=torchrun)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: torchrun starts 2 processes of this run and each would name its own run folder: give torchrun "
        "--rdzv-id=<a name for this run> (the same on every node; the folder is then "
        "outputs/runs/torchrun-<name>_<network>), or pass the same hydra.run.dir=<folder> to every process"
    ]
    check_shared_run_folder(["model=softmax", "hydra.run.dir=/shared/run"], torchrun)  # pinned: fine
    check_shared_run_folder(["model=softmax"], {**torchrun, "TORCHELASTIC_RUN_ID": "job-7"})  # named by the id
    check_shared_run_folder(["model=softmax"], {**torchrun, "WORLD_SIZE": "1"})  # a single process


@pytest.mark.parametrize(
    ("environ", "shared"),
    [
        ({}, None),
        ({"TORCHELASTIC_RUN_ID": "none"}, None),
        ({"TORCHELASTIC_RUN_ID": "job 7/a"}, "torchrun-job_7_a"),
        ({"SLURM_JOB_ID": "42"}, None),  # the batch script itself, or salloc's shell: not one run's processes
        ({"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"}, "slurm-42.0"),  # srun's tasks, and the same after a requeue
    ],
)
def test_the_processes_of_one_launched_run_name_the_same_folder(environ: dict[str, str], shared: str | None) -> None:
    assert shared_run_id(environ) == shared


NO_SLURM = {"PATH": str(Path(sys.executable).parent)}  # this Python's folder: no sbatch, srun or squeue there


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["trainer=ddp_cpu"], None, SPAWN_UNDER_SLURM),
        (
            ["hydra.launcher.timeout_min=2"],
            None,
            "hydra.launcher.timeout_min=2 must be longer than hydra.launcher.signal_delay_s=120 s, the warning "
            "before the time limit (the job would get it as it starts): raise timeout_min or lower signal_delay_s "
            "(not under 90: SLURM may send it 60 s early)",
        ),
        (
            [],
            NO_SLURM,
            "hydra/launcher=slurm needs SLURM's commands, and this machine lacks sbatch, srun, squeue: start the "
            "sweep where jobs are submitted (a login node), or use hydra/launcher=submitit_local",
        ),
    ],
)
def test_a_slurm_sweep_that_cannot_work_is_refused_in_one_line_before_submission(
    options: list[str], env: dict[str, str] | None, message: str, tmp_path: Path
) -> None:
    # Needs no cluster: the launcher checks every job before it asks SLURM for anything.
    result = run_script(
        "train.py", "-m", "hydra/launcher=slurm", "model=softmax,mlp", *options, f"hydra.sweep.dir={tmp_path}",
        cwd=ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / ".submitit").exists()


def test_each_slurm_task_must_be_one_rank_of_the_run(make_cfg) -> None:
    check_slurm_job(make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"), tasks_per_node=2, nodes=1)
    check_slurm_job(make_cfg("trainer=ddp", "trainer.devices=-1"), tasks_per_node=4, nodes=1)  # Lightning checks it
    with pytest.raises(UserError) as one_device:
        check_slurm_job(make_cfg(), tasks_per_node=2, nodes=1)
    assert str(one_device.value) == (
        "hydra.launcher.tasks_per_node=2 starts that many processes per node, each one rank, but trainer.devices=1: "
        "pass trainer=ddp trainer.devices=2 (and trainer.accelerator=cpu without GPUs)"
    )
    with pytest.raises(UserError, match=r"^hydra.launcher.tasks_per_node=1 .* pass hydra.launcher.tasks_per_node=2$"):
        check_slurm_job(make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"), 1, nodes=1)
    with pytest.raises(UserError, match=r"^hydra.launcher.nodes=2 but trainer.num_nodes=1: pass the same number"):
        check_slurm_job(make_cfg(), tasks_per_node=1, nodes=2)


def test_without_the_cluster_extra_hydra_starts_without_a_warning_and_has_no_slurm_launcher() -> None:
    # None in sys.modules makes every import of the upstream launcher fail, as if it were not installed.
    code = (
        "import sys; sys.modules['hydra_plugins.hydra_submitit_launcher'] = None\n"
        "from hydra import compose, initialize_config_dir\n"
        "with initialize_config_dir(config_dir=sys.argv[1], version_base='1.3'):\n"
        "    compose('train')\n"
        "    try:\n"
        "        compose('train', overrides=['hydra/launcher=slurm'])\n"
        "    except Exception as err:\n"
        "        print(type(err).__name__)\n"
    )
    result = run_script("-c", code, str(CONF), cwd=ROOT)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "MissingConfigException", "")
