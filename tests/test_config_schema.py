"""train.py's typed config: every bad value is one line naming the key, the value and what is allowed, with exit
code 1, before any data is read. In-process through Hydra's compose API; one subprocess checks what the user sees."""

import inspect
from dataclasses import fields
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_study.config.checks import check_config
from mnist_study.config.command_line import check_command_line
from mnist_study.config.schema import GROUPS, DataConfig, TrainConfig, TrainerConfig
from mnist_study.errors import UserError
from mnist_study.runs.ending import run_task
from mnist_study.training.pipeline import train

from .conftest import CONF, ROOT, run_script


def test_every_shipped_option_composes_typed_by_its_schema() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for group, options in GROUPS.items():
            for name, schema in options.items():
                cfg = compose("train", overrides=[f"{group}={name}"])
                assert OmegaConf.get_type(cfg) is TrainConfig
                assert OmegaConf.get_type(cfg[group]) is schema
                assert OmegaConf.get_type(cfg.data) is DataConfig
                assert OmegaConf.get_type(cfg.trainer) is TrainerConfig
                check_config(cfg)
        for extra in ("trainer=ddp", "trainer=ddp_cpu", "trainer=gpu", "debug=fast", "debug=overfit"):
            check_config(compose("train", overrides=[extra]))


def test_adams_learning_rate_still_comes_from_the_tuned_lr_table() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=mlp", "tuned_lr.mlp=0.0042"])
    assert OmegaConf.is_interpolation(cfg.optimizer, "lr") and cfg.optimizer.lr == 0.0042


def test_the_keys_only_some_trainer_options_set_default_to_lightnings_own_defaults() -> None:
    trainer_defaults = inspect.signature(L.Trainer).parameters
    for name in ("num_nodes", "strategy", "sync_batchnorm", "fast_dev_run", "overfit_batches"):
        default = next(f.default for f in fields(TrainerConfig) if f.name == name)
        assert default == trainer_defaults[name].default, name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=abc"], "data.batch_size must be a positive integer, got 'abc'"),
        (["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
        (["optimizer.lr=abc"], "optimizer.lr must be a finite number > 0, got 'abc'"),
        (["optimizer.lr=inf"], "optimizer.lr must be a finite number > 0, got inf"),
        (["optimizer.lr=nan"], "optimizer.lr must be a finite number > 0, got nan"),
        (["optimizer.lr=0"], "optimizer.lr must be a finite number > 0, got 0.0"),
        (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum must be a number in [0, 1), got -0.5"),
        (["++trainer.max_epochs=-1"], "trainer.max_epochs must be a positive integer, got -1"),
        (["trainer.max_epochs=null"], "trainer.max_epochs must be a positive integer, got None"),
        (["model=mlp", "model.hidden_sizes=[-5]"], "model.hidden_sizes must be a list of positive integers, got [-5]"),
        (["model=mlp", "model.hidden_sizes=[abc]"], "model.hidden_sizes must be a list of positive integers, got ['a"),
        (["model=cnn", "model.kernel_size=4"], "model.kernel_size must be an odd positive integer"),
        (["model=cnn", "model.channels=[8,8,8,8,8]"], "model.channels must be a list of at most 4 positive integers"),
        (["seed=-1"], "seed must be an integer in [0, 2**32), got -1"),
        (["seed=1180591620717411303424"], "seed must be an integer in [0, 2**32), got 1180591620717411303424"),
        (["seed=abc"], "seed must be an integer in [0, 2**32), got 'abc'"),
        (["regularizer=dropout", "regularizer.rate=1.0"], "regularizer.rate must be in [0, 1), got 1.0"),
        (["regularizer=dropout", "regularizer.rate=abc"], "regularizer.rate must be a number in [0, 1), got 'abc'"),
        (["scheduler=onecycle", "scheduler.pct_start=0"], "scheduler.pct_start must be a number in (0, 1), got 0.0"),
        (["tuned_lr.cnn=abc"], "tuned_lr.cnn must be a number, got 'abc'"),
        (["+trainer.max_epoch=1"], "trainer.max_epoch is not a lightning.Trainer argument: did you mean trainer.max_e"),
        (["+trainer.logger=false"], "trainer.logger is set by train.py itself"),
        (["+data.batchsize=64"], "data.batchsize is not an option of data: did you mean data.batch_size?"),
        (["model=mlp", "model.hidden_size=3"], "model.hidden_size is not an option of model=mlp: did you mean model.h"),
        (["model=softmax", "+model.hidden_sizes=[5]"], "model.hidden_sizes is not an option of model=softmax"),
        (["+seeds=1"], "seeds is not an option of train.py: did you mean seed?"),
        (["+logger.tensorboard.flush_sec=1"], "logger.tensorboard.flush_sec is not a TensorBoardRunLogger argument: "
                                               "did you mean logger.tensorboard.flush_secs?"),
        (["model=softmax,mlp", "data.batch_size=10,abc"], "data.batch_size must be a positive integer, got 'abc'"),
        (["experiment=study", "+model.hidden_sizes=[5]"], "model.hidden_sizes is not an option of model=softmax"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_naming_key_value_and_what_is_allowed(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as raised:
        check_command_line(overrides, CONF)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["+trainer.gradient_clip_val=1.0"],  # a real lightning.Trainer argument
        ["+logger.tensorboard.prefix=x"],  # a real TensorBoardLogger argument
        ["+tuned_lr.resnet=0.1"],
        ["+callbacks.stop={_target_:lightning.pytorch.callbacks.EarlyStopping,monitor:val/acc}"],
        ["~callbacks.learning_rate"],
        ["data.checksums=null"],
        ["seed=4294967295", "optimizer.lr=1e12", "scheduler=none"],
    ],
)
def test_good_values_pass(overrides: list[str]) -> None:
    assert check_command_line(overrides, CONF) == 1


def test_a_sweep_is_checked_job_by_job_with_the_experiments_own_sweep() -> None:
    assert check_command_line(["experiment=study"], CONF) == 9
    assert check_command_line(["experiment=study", "model=mlp", "seed=0,1"], CONF) == 6


def test_hydra_keeps_its_own_message_for_an_unknown_group_option() -> None:
    assert check_command_line(["model=foo"], CONF) == 0  # left to Hydra, which lists the options


def test_a_range_error_in_a_composed_config_stops_train_before_any_data_is_read(make_cfg, capsys, tmp_path) -> None:
    cfg = make_cfg("seed=-1", f"data.data_dir={tmp_path / 'data'}")  # a first read would create the folder
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: seed must be an integer in [0, 2**32), got -1"
    assert not (tmp_path / "data").exists()


def test_train_py_refuses_a_bad_value_with_one_line_and_exit_code_1(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_script("train.py", "data.batch_size=abc", f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: data.batch_size must be a positive integer, got 'abc'"
    assert "Traceback" not in result.stdout + result.stderr
    assert not run_dir.exists()  # refused before Hydra created the run's folder
