from mnist_study import bench

from .conftest import data_overrides


def test_benchmark_runs_and_prints_the_ratio_table(synthetic_mnist, capsys) -> None:
    bench.main(["--models", "softmax", "--epochs", "2", "--per-sample", *data_overrides(*synthetic_mnist)])
    out = capsys.readouterr().out
    assert "| softmax |" in out and "ratio" in out
    assert "torchvision Dataset + DataLoader" in out
