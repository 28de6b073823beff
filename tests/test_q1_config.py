"""q1's typed config: every bad option is one line naming the key, the value and what is allowed, before any
job runs. In-process through Hydra's compose API; one subprocess checks what the user sees."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_study.errors import UserError
from mnist_study.manual_backprop.config import Q1Config, check_command_line, register, settings_from
from mnist_study.manual_backprop.descent import Settings

from .conftest import CONF, ROOT, run_script


def test_q1_yaml_is_typed_by_the_schema_and_its_defaults_are_the_settings_defaults() -> None:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("q1")
    assert OmegaConf.get_type(cfg) is Q1Config
    assert settings_from(cfg) == Settings()


def test_every_job_of_a_sweep_is_composed_and_checked() -> None:
    jobs = check_command_line(["k=2,4,8", "lr=0.1,0.2", "backend=torch", "hydra.sweep.dir=/nowhere"], CONF)
    assert [(s.k, s.lr, s.backend) for s in jobs] == [(k, lr, "torch") for k in (2, 4, 8) for lr in (0.1, 0.2)]
    assert [s.k for s in check_command_line(["k=range(1,4)"], CONF)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["k=abc"], "k must be an integer >= 1, got 'abc'"),  # OmegaConf's type error, from the schema
        (["k=2.5"], "k must be an integer >= 1, got 2.5"),
        (["k=0"], "k must be an integer >= 1, got 0"),
        (["k=2,abc,8"], "k must be an integer >= 1, got 'abc'"),  # in a sweep: refused before k=2 runs
        (["epochs=-1"], "epochs must be an integer >= 1, got -1"),
        (["epochs=0"], "epochs must be an integer >= 1, got 0"),
        (["lr=abc"], "lr must be a finite number > 0, got 'abc'"),
        (["lr=0"], "lr must be a finite number > 0, got 0.0"),
        (["seed=-1"], "seed must be an integer >= 0, got -1"),
        (["seed=true"], "seed must be an integer >= 0, got True"),
        (["dtype=float16"], "dtype must be float64 or float32, got 'float16'"),
        (["backend=foo"], "backend must be numpy or torch, got 'foo'"),
        (["init=zeros"], "init must be uniform or normal, got 'zeros'"),
        (
            ["engine=graph", "backend=torch"],
            "backend must be numpy with engine=graph (a NumPy-only engine), got 'torch'",
        ),
        (["device=cuda"], "device must be cpu or auto with backend=numpy (NumPy runs on the CPU), got 'cuda'"),
        (["kk=3"], "kk is not an option of q1.py: its options are k, "),
        (["hydra.run.dir=/tmp/q1"], "hydra.run.dir is not where q1.py writes: it always runs as a sweep"),
        (["k=["], "cannot parse the command line: "),
    ],
)
def test_bad_options_are_one_line_naming_key_value_and_what_is_allowed(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as raised:
        check_command_line(overrides, CONF)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_k_whose_arrays_cannot_fit_in_memory_is_refused_before_anything_is_allocated() -> None:
    with pytest.raises(UserError, match=r"^k must be at most about \d+ with n_samples=1 and float64 on this cpu"):
        check_command_line(["k=4,100000000"], CONF)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_is_refused_where_torch_sees_no_gpu() -> None:
    with pytest.raises(UserError, match="device must be cpu or auto: torch sees no CUDA device here, got 'cuda'"):
        check_command_line(["backend=torch", "device=cuda"], CONF)


def test_q1_refuses_a_bad_option_with_one_line_and_exit_code_1_before_any_job(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_script("q1.py", "k=2,abc", f"hydra.sweep.dir={sweep_dir}", cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: k must be an integer >= 1, got 'abc'"
    assert "Traceback" not in result.stdout + result.stderr
    assert not sweep_dir.exists()  # no job started
