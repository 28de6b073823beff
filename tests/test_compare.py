import re
from pathlib import Path

import pytest

from mnist_study.reporting import compare
from mnist_study.reporting.stats import welch

from .helpers.runs import run_of


def test_each_network_is_tested_across_the_two_sweeps() -> None:
    fp32 = [run_of("cnn", "bn", s, a) for s, a in enumerate((0.9930, 0.9934, 0.9932))]
    fp32 += [run_of("mlp", "none", s, a) for s, a in enumerate((0.9850, 0.9852, 0.9849))]
    bf16 = [run_of("cnn", "bn", s, a) for s, a in enumerate((0.9921, 0.9935, 0.9940))]  # within the seeds' spread
    bf16 += [run_of("mlp", "none", s, a) for s, a in enumerate((0.9820, 0.9822, 0.9821))]  # clearly lower
    bf16 += [run_of("softmax", "none", 0, 0.9270)]  # not in the other sweep: no row
    lines = compare.comparison(fp32, bf16, "fp32", "bf16")

    assert lines[0].startswith("| model | regularizer | fp32: test acc (%) | bf16: test acc (%) | bf16 − fp32 (points)")
    assert [line.split(" | ")[:2] for line in lines[2:]] == [["| mlp", "none"], ["| cnn", "bn"]]
    mlp = welch([98.20, 98.22, 98.21], [98.50, 98.52, 98.49])
    assert f"| -0.29 | {mlp.low:+.2f} to {mlp.high:+.2f} | < 0.001 | differs | — |" in lines[2] and mlp.p_value < 0.001
    assert "| no significant difference at 3 seeds |" in lines[3]


def test_one_seed_each_is_compared_without_a_test(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "comparison.md"
    compare.main([str(sweep), str(sweep), str(out)])
    rows = out.read_text().splitlines()[2:]
    assert len(rows) == 4 and capsys.readouterr().out == out.read_text()
    assert all("| +0.00 | — | — | one seed: no test possible | 1.00 |" in row for row in rows)


def test_the_cli_needs_two_sweep_folders(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"usage: python -m mnist_study\.reporting\.compare SWEEP_A SWEEP_B"):
        compare.main([str(tmp_path)])
    with pytest.raises(SystemExit, match=re.escape(f"error: {tmp_path / 'nope'} is not a folder")):
        compare.main([str(tmp_path), str(tmp_path / "nope")])
