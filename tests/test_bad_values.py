"""Every bad value is one line naming the key, the value and what is allowed, found before anything is written or
started: an adversarial list of bad values for train.py (and q1.py), each through the whole check that train.py
runs before Hydra starts (in-process: fast), and a sample through the real command line."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_study.errors import UserError
from mnist_study.manual_backprop.config import check_command_line as check_q1_command_line
from mnist_study.training.pipeline import train
from mnist_study.training.preflight import check_train_command_line
from mnist_study.training.resources import cpu_cores

from .conftest import CONF, ROOT, refused_in_one_line, run_script
from .helpers.processes import child_environment

# (command-line arguments, the start of the one-line error)
BAD_VALUES = [
    ("trainer.precision=17", "trainer.precision must be one of auto, "),
    ("trainer.precision=abc", "trainer.precision must be one of auto, "),
    ("trainer.precision=8-mixed", "trainer.precision must be one of auto, "),
    ("trainer.accelerator=foo", "trainer.accelerator must be one of auto, "),
    ("trainer.accelerator=123", "trainer.accelerator must be one of auto, "),
    ("trainer.devices=0", "trainer.devices must be a positive integer, -1 (every device), auto, or a non-empty list o"),
    (
        "trainer.devices=abc",
        "trainer.devices must be a positive integer, -1 (every device), auto, or a non-empty list o",
    ),
    (
        "trainer.devices=-2",
        "trainer.devices must be a positive integer, -1 (every device), auto, or a non-empty list o",
    ),
    (
        "trainer.devices=[]",
        "trainer.devices must be a positive integer, -1 (every device), auto, or a non-empty list o",
    ),
    (
        "trainer.devices=[-1]",
        "trainer.devices must be a positive integer, -1 (every device), auto, or a non-empty list o",
    ),
    (
        "trainer.devices=1.5",
        "trainer.devices must be a positive integer, -1 (every device), auto, or a non-empty list o",
    ),
    ("trainer.profiler=foo", "trainer.profiler must be simple, advanced, pytorch or null, got"),
    ("trainer.profiler=1", "trainer.profiler must be simple, advanced, pytorch or null, got"),
    ("trainer.strategy=foo", "trainer.strategy must be one of auto, "),
    ("trainer.strategy=ddp_foo", "trainer.strategy must be one of auto, "),
    ("+trainer.gradient_clip_val=abc", "trainer.gradient_clip_val must be a finite number >= 0, got"),
    ("+trainer.gradient_clip_val=-1", "trainer.gradient_clip_val must be a finite number >= 0, got"),
    ("+trainer.gradient_clip_val=inf", "trainer.gradient_clip_val must be a finite number >= 0, got"),
    ("+trainer.gradient_clip_val=nan", "trainer.gradient_clip_val must be a finite number >= 0, got"),
    ("+trainer.gradient_clip_algorithm=foo", "trainer.gradient_clip_algorithm must be norm or value, got"),
    (
        "+trainer.limit_train_batches=-1",
        "trainer.limit_train_batches must be a number of batches >= 1 (an integer) or a fraction in",
    ),
    (
        "+trainer.limit_train_batches=0",
        "trainer.limit_train_batches must be a number of batches >= 1 (an integer) or a fraction in",
    ),
    (
        "+trainer.limit_train_batches=1.5",
        "trainer.limit_train_batches must be a number of batches >= 1 (an integer) or a fraction in",
    ),
    (
        "+trainer.limit_train_batches=abc",
        "trainer.limit_train_batches must be a number of batches >= 1 (an integer) or a fraction in",
    ),
    (
        "+trainer.limit_val_batches=-1",
        "trainer.limit_val_batches must be a number of batches >= 1 (an integer) or a fraction in (",
    ),
    (
        "+trainer.limit_test_batches=0",
        "trainer.limit_test_batches must be a number of batches >= 1 (an integer) or a fraction in ",
    ),
    (
        "+trainer.limit_test_batches=-0.5",
        "trainer.limit_test_batches must be a number of batches >= 1 (an integer) or a fraction in ",
    ),
    ("trainer.fast_dev_run=-1", "trainer.fast_dev_run must be true, false or a number of batches >= 0, got"),
    ("trainer.fast_dev_run=abc", "trainer.fast_dev_run must be true, false or a number of batches >= 0, got"),
    ("trainer.fast_dev_run=1.5", "trainer.fast_dev_run must be true, false or a number of batches >= 0, got"),
    (
        "trainer.overfit_batches=-1",
        "trainer.overfit_batches must be a number of batches >= 0 (an integer) or a fraction in [0,",
    ),
    (
        "trainer.overfit_batches=1.5",
        "trainer.overfit_batches must be a number of batches >= 0 (an integer) or a fraction in [0,",
    ),
    (
        "trainer.overfit_batches=abc",
        "trainer.overfit_batches must be a number of batches >= 0 (an integer) or a fraction in [0,",
    ),
    ("trainer.deterministic=maybe", "trainer.deterministic must be true, false or warn, got"),
    ("trainer.deterministic=1", "trainer.deterministic must be true, false or warn, got"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be a positive integer, got"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be a positive integer, got"),
    ("trainer.max_epochs=abc", "trainer.max_epochs must be a positive integer, got"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps must be a positive integer, got"),
    ("trainer.num_nodes=0", "trainer.num_nodes must be a positive integer, got"),
    ("trainer.num_nodes=-1", "trainer.num_nodes must be a positive integer, got"),
    ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be a positive integer, got"),
    ("+trainer.accumulate_grad_batches=abc", "trainer.accumulate_grad_batches must be a positive integer, got"),
    (
        "+trainer.val_check_interval=0",
        "trainer.val_check_interval must be a number of batches >= 1 (an integer) or a fraction in ",
    ),
    (
        "+trainer.val_check_interval=-1",
        "trainer.val_check_interval must be a number of batches >= 1 (an integer) or a fraction in ",
    ),
    ("+trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch must be a positive integer, got"),
    ("+trainer.max_steps=-5", "trainer.max_steps must be an integer >= 1, or -1 (no limit), got"),
    ("+trainer.max_steps=0", "trainer.max_steps must be an integer >= 1, or -1 (no limit), got"),
    (
        "+trainer.num_sanity_val_steps=-2",
        "trainer.num_sanity_val_steps must be an integer >= -1 (-1: the whole validation set), got",
    ),
    ("+trainer.benchmark=maybe", "trainer.benchmark must be true or false, got"),
    ("+trainer.detect_anomaly=abc", "trainer.detect_anomaly must be true or false, got"),
    ("trainer.sync_batchnorm=maybe", "trainer.sync_batchnorm must be true or false, got"),
    ("trainer.enable_model_summary=maybe", "trainer.enable_model_summary must be true or false, got"),
    ("trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar must be true or false or null, got"),
    ("+trainer.foo=1", "trainer.foo is not a lightning.Trainer argument"),
    ("+trainer.default_root_dir=/tmp", "trainer.default_root_dir is set by train.py itself and canno"),
    ("callbacks.epoch_seed.seed=abc", "callbacks.epoch_seed.seed must be an integer (EpochSeed's seed), got"),
    ("callbacks.epoch_seed.seed=1.5", "callbacks.epoch_seed.seed must be an integer (EpochSeed's seed), got"),
    ("+callbacks.epoch_seed.foo=1", "callbacks.epoch_seed.foo is not an argument of EpochSeed"),
    ("callbacks.divergence_guard.lr=abc", "callbacks.divergence_guard.lr must be a number (DivergenceGuard's lr), got"),
    (
        "+callbacks.x={_target_:os.system,command:ls}",
        "callbacks.x._target_=os.system is not a Lightning Callback class",
    ),
    (
        "+callbacks.x={_target_:nope.Nothing}",
        "callbacks.x._target_=nope.Nothing cannot be imported (No module named 'nope')",
    ),
    ("+callbacks.x=5", "callbacks.x must be {_target_: <a Lightning Callback class>, <its arguments>}, got"),
    (
        "+callbacks.stop={_target_:lightning.pytorch.callbacks.EarlyStopping,monitor:val/acc,patience:abc}",
        "callbacks.stop.patience must be an integer (EarlyStopping's patience), got",
    ),
    (
        "+callbacks.stop={_target_:lightning.pytorch.callbacks.EarlyStopping,monitro:val/acc}",
        "callbacks.stop.monitro is not an argument of EarlyStopping",
    ),
    ("data.data_dir=", "data.data_dir must be a folder path (not empty), got"),
    ("data.batch_size=0", "data.batch_size must be a positive integer, got"),
    ("data.batch_size=-1", "data.batch_size must be a positive integer, got"),
    ("data.batch_size=abc", "data.batch_size must be a positive integer, got"),
    ("data.batch_size=1.5", "data.batch_size must be a positive integer, got"),
    ("data.eval_batch_size=0", "data.eval_batch_size must be a positive integer, got"),
    ("data.val_size=0", "data.val_size must be a positive integer, got"),
    ("data.val_size=-5", "data.val_size must be a positive integer, got"),
    ("data.split_seed=-1", "data.split_seed must be an integer in [0, 2**32), got"),
    ("data.split_seed=abc", "data.split_seed must be an integer in [0, 2**32), got"),
    ("data.on_device=maybe", "data.on_device must be true or false, got"),
    ("data.download=maybe", "data.download must be true or false, got"),
    ("data.checksums=abc", "data.checksums='abc' is not a mapping"),
    (
        "data.checksums={train_images:abc}",
        "data.checksums gives train_images but not train_labels, test_images, test_labels",
    ),
    ("+data.foo=1", "data.foo is not an option of data"),
    ("model=mlp model.hidden_sizes=[]", "model.hidden_sizes must be a non-empty list of positive integers"),
    ("model=mlp model.hidden_sizes=[0]", "model.hidden_sizes must be a non-empty list of positive integers"),
    ("model=mlp model.hidden_sizes=abc", "model.hidden_sizes must be a non-empty list of positive integers"),
    ("model=mlp model.hidden_sizes=[1.5]", "model.hidden_sizes must be a non-empty list of positive integers"),
    ("model=cnn model.channels=[]", "model.channels must be a list of 1 to 4 positive integers"),
    ("model=cnn model.channels=[0]", "model.channels must be a list of 1 to 4 positive integers"),
    ("model=cnn model.channels=[8,8,8,8,8]", "model.channels must be a list of 1 to 4 positive integers"),
    (
        "model=cnn model.kernel_size=0",
        "model.kernel_size must be an odd positive integer (the padding keeps the image size), got",
    ),
    (
        "model=cnn model.kernel_size=2",
        "model.kernel_size must be an odd positive integer (the padding keeps the image size), got",
    ),
    (
        "model=cnn model.kernel_size=-3",
        "model.kernel_size must be an odd positive integer (the padding keeps the image size), got",
    ),
    ("model=cnn model.hidden_size=0", "model.hidden_size must be a positive integer, got"),
    ("model.name=resnet", "model=resnet is unknown"),
    ("+model.foo=1", "model.foo is not an option of model=cnn"),
    ("regularizer=dropout regularizer.rate=1", "regularizer.rate must be in [0, 1), got"),
    ("regularizer=dropout regularizer.rate=-0.1", "regularizer.rate must be in [0, 1), got"),
    ("regularizer=dropout regularizer.rate=nan", "regularizer.rate must be in [0, 1), got"),
    ("regularizer=dropout regularizer.mask=foo", "regularizer.mask must be fast or torch, got"),
    ("regularizer=bn regularizer.momentum=2", "regularizer.momentum must be a number in [0, 1], got"),
    ("regularizer=bn regularizer.momentum=-1", "regularizer.momentum must be a number in [0, 1], got"),
    ("regularizer=bn regularizer.momentum=nan", "regularizer.momentum must be a number in [0, 1], got"),
    ("optimizer.lr=0", "optimizer.lr must be a finite number > 0, got"),
    ("optimizer.lr=-1", "optimizer.lr must be a finite number > 0, got"),
    ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0, got"),
    ("optimizer.lr=nan", "optimizer.lr must be a finite number > 0, got"),
    ("optimizer.lr=abc", "optimizer.lr must be a finite number > 0, got"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a finite number >= 0, got"),
    ("optimizer.weight_decay=inf", "optimizer.weight_decay must be a finite number >= 0, got"),
    ("optimizer=sgd optimizer.momentum=1", "optimizer.momentum must be a number in [0, 1), got"),
    ("optimizer=sgd optimizer.momentum=-0.1", "optimizer.momentum must be a number in [0, 1), got"),
    (
        "optimizer=sgd optimizer.nesterov=true optimizer.momentum=0",
        "optimizer.nesterov=true needs optimizer.momentum > 0, got 0",
    ),
    ("optimizer.fused=maybe", "optimizer.fused must be true or false, got"),
    (
        "trainer.precision=16-mixed +trainer.gradient_clip_val=1",
        "optimizer.fused=true cannot go with trainer.gradient_clip_val under trainer.precision=16-mixed",
    ),
    ("tuned_lr.cnn=0", "tuned_lr.cnn must be a finite number > 0, got"),
    ("tuned_lr.cnn=inf", "tuned_lr.cnn must be a finite number > 0, got"),
    ("tuned_lr.cnn=abc", "tuned_lr.cnn must be a number, got"),
    ("+tuned_lr.foo=-1", "tuned_lr.foo must be a finite number > 0, got"),
    ("scheduler.pct_start=0", "scheduler.pct_start must be a number in (0, 1), got"),
    ("scheduler.pct_start=1", "scheduler.pct_start must be a number in (0, 1), got"),
    ("scheduler.pct_start=abc", "scheduler.pct_start must be a number in (0, 1), got"),
    ("seed=-1", "seed must be an integer in [0, 2**32), got"),
    ("seed=4294967296", "seed must be an integer in [0, 2**32), got"),
    ("seed=abc", "seed must be an integer in [0, 2**32), got"),
    ("seed=1.5", "seed must be an integer in [0, 2**32), got"),
    ("output_dir=/tmp/x", "output_dir is set by train.py (the run's folder, hydra.run.dir; in a sweep hydra.sweep.dir"),
    ("+output_dir=x", "output_dir is set by train.py (the run's folder, hydra.run.dir; in a sweep hydra.sweep.dir"),
    ("~output_dir", "output_dir is set by train.py (the run's folder, hydra.run.dir; in a sweep hydra.sweep.dir"),
    ("test_every_epoch=maybe", "test_every_epoch must be true or false, got"),
    ("channels_last=maybe", "channels_last must be true or false, got"),
    ("compile=maybe", "compile must be true or false, got"),
    ("oversubscribe=maybe", "oversubscribe must be true or false, got"),
    ("+foo=1", "foo is not an option of train.py"),
    ("model=softmax,mlp data.batch_size=10,0", "data.batch_size must be a positive integer, got"),
    ("seed=0,1,-1", "seed must be an integer in [0, 2**32), got"),
    ("trainer.accelerator=cpu trainer.devices=-1", "trainer.devices=-1 on the CPU"),
    ("trainer.accelerator=cpu trainer.devices=[0,1]", "trainer.devices=[0, 1] on the CPU"),
    (
        "model=mlp model.hidden_sizes=[2000000000]",
        "model=mlp with these sizes has 1,590,000,000,010 parameters; training it with optimizer=ad",
    ),
    (
        "model=mlp model.hidden_sizes=[1000000,1000000]",
        "model=mlp with these sizes has 1,000,796,000,010 parameters; training it with optimizer=ad",
    ),
    (
        "data.batch_size=100000000",
        "model=cnn with these sizes has 421,642 parameters; training it with optimizer=adam and dat",
    ),
    ("ckpt_path=/nowhere/last.ckpt", "ckpt_path=/nowhere/last.ckpt does not exist"),
    ("ckpt_path=/etc/passwd", "ckpt_path=/etc/passwd is a text file, not a checkpoint (a zi"),
    ("ckpt_path=/tmp", "ckpt_path=/tmp is a folder, not a checkpoint file"),
    ("-m ckpt_path=/tmp/x.ckpt", "ckpt_path=/tmp/x.ckpt resumes one run and cannot be given to a -m sweep"),
    ("trainer.max_epochs=1e10", "trainer.max_epochs must be a positive integer, got"),
    ("data.data_dir=/etc/passwd", "data.data_dir=/etc/passwd is a file, it must be a folder: mo"),
    ("data.data_dir=\"'  '\"", "data.data_dir must be a folder path (not empty), got '  '"),
]


def refusal(line: str, config_dir: Path = CONF) -> str:
    """The one-line UserError that train.py's check of a whole command line raises for `line`."""
    args = shlex.split(line)
    with pytest.raises(UserError) as raised:
        check_train_command_line([a for a in args if a != "-m"], config_dir, multirun="-m" in args)
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_the_list_is_long_and_has_no_repeats() -> None:
    lines = [line for line, _ in BAD_VALUES]
    assert len(lines) >= 100 and len(set(lines)) == len(lines)


@pytest.mark.parametrize(("line", "message"), BAD_VALUES, ids=[line[:60] for line, _ in BAD_VALUES])
def test_every_bad_value_is_one_line_naming_key_value_and_what_is_allowed(line: str, message: str) -> None:
    found = refusal(line)
    assert found.startswith(message), found
    bad = shlex.split(line)[-1].split("=", 1)[-1].split(",")[-1]
    if ", got " in found and bad and not set(bad) & set("[]{}:' "):  # a scalar: shown as given, or as a number
        shown = found.rsplit(", got ", 1)[1].split(":")[0]
        assert shown.strip("'") == bad or float(shown) == float(bad), found


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present here")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("trainer.devices=99", f"trainer.devices=99 would start 99 training processes on this machine's "
                     f"{cpu_cores()} CPU core(s): use trainer.devices={cpu_cores()} or fewer, or add oversubscribe",
                     marks=pytest.mark.skipif(cpu_cores() >= 99, reason="99 cores or more")),
        pytest.param("trainer.accelerator=gpu", "trainer.accelerator=gpu: this machine has no GPU", marks=no_cuda),
        pytest.param("trainer.accelerator=cuda", "trainer.accelerator=cuda: this machine has no GPU", marks=no_cuda),
        pytest.param("trainer=gpu", "trainer.accelerator=gpu: this machine has no GPU", marks=no_cuda),
        pytest.param("trainer=ddp", "trainer.accelerator=gpu: this machine has no GPU", marks=no_cuda),
        ("trainer.accelerator=tpu", "trainer.accelerator=tpu: this machine has no tpu device"),
        ("model=cnn model.channels=[1000000]", "model=cnn with these sizes has 25,098,001,418 parameters"),
        ("-m seed=0,1 trainer.devices=99", "trainer.devices=99 would start 99 training processes"),
    ],
)  # fmt: skip
def test_what_this_machine_cannot_run_is_refused_before_any_process_starts(line: str, message: str) -> None:
    assert refusal(line).startswith(message)


def test_oversubscription_is_asked_for_explicitly() -> None:
    assert check_train_command_line(["trainer.devices=99", "oversubscribe=true"], CONF) == 1  # checked, not run


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert refusal(f"hydra.run.dir={blocker / 'run'}").startswith(
        f"hydra.run.dir={blocker / 'run'} cannot be created: {blocker} is a file, not a folder"
    )
    assert refusal(f"-m hydra.sweep.dir={blocker / 'sweep'}").startswith(f"hydra.sweep.dir={blocker / 'sweep'} cannot")
    with pytest.raises(UserError, match=r"output_dir is set by q1\.py"):
        check_q1_command_line(["output_dir=/tmp/elsewhere"], CONF)


@pytest.mark.parametrize(("value", "shown"), [("inf", "inf"), ("nan", "nan"), ("-inf", "-inf")])
def test_q1_refuses_a_learning_rate_that_is_not_finite(value: str, shown: str) -> None:
    with pytest.raises(UserError) as raised:
        check_q1_command_line([f"lr={value}"], CONF)
    assert str(raised.value) == f"lr must be a finite number > 0, got {shown}"


def train_py_on_one_core(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, whatever tests/helpers/processes.py would choose: its CPU affinity is set as it starts."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=child_environment(), capture_output=True,
        text=True, timeout=240, check=False, preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_the_command_line_refuses_more_processes_than_cores_before_starting_one(tmp_path: Path) -> None:
    """Run on one core (its affinity): trainer.devices=2 is one process too many. Were the check missing, the two
    processes it would start are harmless; trainer.devices=99 is never run for real."""
    result = train_py_on_one_core("trainer.accelerator=cpu", "trainer.devices=2", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: trainer.devices=2 would start 2 training processes on this machine's 1 CPU core(s): use "
        "trainer.devices=1 or fewer, or add oversubscribe=true to start them anyway"
    )
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a folder


def test_the_command_line_answers_a_bad_value_in_one_line(tmp_path: Path) -> None:
    result = run_script(str(ROOT / "train.py"), "output_dir=/tmp/elsewhere", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: output_dir is set by train.py")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "outputs").exists()


def test_what_lightning_refuses_in_the_job_is_one_line_and_leaves_no_folder(make_cfg, capsys, tmp_path: Path) -> None:
    cfg = make_cfg("model=softmax", "trainer.strategy=fsdp", output_dir=tmp_path / "run")
    err = refused_in_one_line(train, cfg, capsys)
    assert err.startswith("error: Lightning refuses this configuration: The strategy `fsdp` requires a GPU accelerator")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_the_command_line_is_checked_exits_130_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_study.runs.ending import refuse_bad_command_line

    def interrupted(overrides: list[str], config_dir: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        refuse_bad_command_line(["model=mlp"], interrupted, CONF)
    assert stopped.value.code == 130 and capsys.readouterr().err == ""
