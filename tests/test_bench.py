import torch

from benchmarks import epoch_times as bench
from benchmarks import step_times as step_bench

from .conftest import data_overrides


def test_benchmark_runs_and_prints_the_ratio_table(synthetic_mnist, capsys) -> None:
    bench.main(
        ["--models", "softmax", "--epochs", "2", "--per-sample", "--automatic", *data_overrides(*synthetic_mnist)]
    )
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("| softmax | none | 32-true |")]
    seconds_and_ratios = [float(cell.split()[0]) for cell in row.strip("| ").split(" | ")[3:]]
    assert len(seconds_and_ratios) == 5 and all(value > 0 for value in seconds_and_ratios)  # raw, bare, project
    assert "| bare Lightning / raw | ratio (project / raw) |" in out
    assert "torchvision Dataset + DataLoader" in out
    [automatic] = [
        line for line in out.splitlines() if line.startswith("softmax-none: bare Lightning, automatic optimization")
    ]
    assert float(automatic.split()[-3]) > 0


def test_benchmark_covers_every_regularizer_and_precision_asked_for(synthetic_mnist, capsys) -> None:
    options = ["--models", "softmax", "--regularizers", "dropout", "bn", "--precisions", "32-true", "bf16-mixed"]
    bench.main([*options, "--epochs", "2", "--train-batches", "3", *data_overrides(*synthetic_mnist)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| softmax |")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["dropout", "32-true"], ["dropout", "bf16-mixed"], ["bn", "32-true"], ["bn", "bf16-mixed"],
    ]  # fmt: skip
    assert "3 training batches an epoch" in out


def test_benchmark_rounds_take_turns_and_give_each_ratios_median_and_range(
    synthetic_mnist, capsys, monkeypatch
) -> None:
    order: list[str] = []
    project_seconds = iter([2.0, 3.0, 2.5])

    def side(name: str, seconds: float | None = None):
        def epochs(*args) -> list[float]:
            order.append(name)
            return [99.0, seconds if seconds is not None else next(project_seconds)]  # the first epoch is warm-up

        return epochs

    monkeypatch.setattr(bench, "raw_epochs", side("raw", 1.0))
    monkeypatch.setattr(bench, "bare_lightning_epochs", side("bare", 1.5))
    monkeypatch.setattr(bench, "project_epochs", side("project"))
    bench.main(["--models", "softmax", "--rounds", "3", *data_overrides(*synthetic_mnist)])
    assert order == ["raw", "bare", "project", "bare", "project", "raw", "project", "raw", "bare"]
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| softmax |")]
    assert row.endswith("| 1.000 | 1.500 | 2.500 | 1.50 (1.50-1.50) | 2.50 (2.00-3.00) |")


def test_step_benchmark_times_the_project_against_each_switch_undone(capsys) -> None:
    step_bench.main(["--regularizers", "bn", "--precision", "fp32", "--rounds", "2", "--steps", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cnn-bn")]
    variants = ["project", "ReLU before pool", "NCHW weights", "NaN fill on", "Adam for-loop"]
    assert [row.split(maxsplit=2)[2].startswith(name) for row, name in zip(rows, variants, strict=True)] == [True] * 5
    assert torch.utils.deterministic.fill_uninitialized_memory is False  # the NaN-fill variant puts it back
