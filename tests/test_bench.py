from mnist_study import bench

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
