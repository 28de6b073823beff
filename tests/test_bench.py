import torch

from mnist_study import bench, step_bench

from .conftest import data_overrides


def test_benchmark_runs_and_prints_the_ratio_table(synthetic_mnist, capsys) -> None:
    bench.main(["--models", "softmax", "--epochs", "2", "--per-sample", *data_overrides(*synthetic_mnist)])
    out = capsys.readouterr().out
    assert "| softmax | none | 32-true |" in out and "ratio" in out
    assert "torchvision Dataset + DataLoader" in out


def test_benchmark_covers_every_regularizer_and_precision_asked_for(synthetic_mnist, capsys) -> None:
    options = ["--models", "softmax", "--regularizers", "dropout", "bn", "--precisions", "32-true", "bf16-mixed"]
    bench.main([*options, "--epochs", "2", "--train-batches", "3", *data_overrides(*synthetic_mnist)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| softmax |")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["dropout", "32-true"], ["dropout", "bf16-mixed"], ["bn", "32-true"], ["bn", "bf16-mixed"],
    ]  # fmt: skip
    assert "3 training batches an epoch" in out


def test_benchmark_rounds_alternate_the_sides_and_give_the_ratios_range(synthetic_mnist, capsys) -> None:
    options = ["--models", "softmax", "--rounds", "2", "--epochs", "2", "--train-batches", "3"]
    bench.main([*options, *data_overrides(*synthetic_mnist)])
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| softmax |")]
    low, high = map(float, row.split(" | ")[-1].rstrip(" |").split("(")[1].rstrip(")").split("-"))
    assert low <= float(row.split(" | ")[-1].split()[0]) <= high


def test_step_benchmark_times_the_project_against_each_switch_undone(capsys) -> None:
    step_bench.main(["--regularizers", "bn", "--precision", "fp32", "--rounds", "2", "--steps", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cnn-bn")]
    variants = ["project", "ReLU before pool", "NCHW weights", "NaN fill on", "Adam for-loop"]
    assert [row.split(maxsplit=2)[2].startswith(name) for row, name in zip(rows, variants, strict=True)] == [True] * 5
    assert torch.utils.deterministic.fill_uninitialized_memory is False  # the NaN-fill variant puts it back
