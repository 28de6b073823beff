"""q1 stopped by SIGTERM or SIGINT exits with 143 or 130, like train.py, and its failed.txt says what the sweep has:
the jobs that finished before the stop (their history and the report are kept)."""

import signal
from pathlib import Path

import pytest

from .conftest import ROOT
from .pause import Run

SLOW = 1500  # a K whose job runs for minutes at epochs=2000: the signal arrives while it runs


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_q1_stopped_by_a_signal_exits_128_plus_it_and_names_the_finished_jobs(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    sweep_dir = tmp_path / "q1"
    options = [f"k=2,{SLOW}", "epochs=2000", "init=normal", f"hydra.sweep.dir={sweep_dir}"]
    run = Run("q1.py", *options, cwd=ROOT, log_dir=tmp_path)
    run.wait_for_line(f"k={SLOW}: 2000 epochs of gradient descent")  # the slow job has started
    run.proc.send_signal(signum)
    exit_code, _, stderr = run.finish()

    assert exit_code == code, stderr[-3000:]
    record = next(sweep_dir.glob(f"*k={SLOW}")).joinpath("failed.txt").read_text()
    assert record.startswith(
        f"terminated by {signum.name} before this job finished; the jobs finished before it: k=2 (their "
        "history.json is kept and the sweep's report.md shows them)"
    )
    assert "checkpoint" not in record  # q1 has none
    assert next(sweep_dir.glob("*k=2")).joinpath("history.json").is_file()
    assert "K=2" in (sweep_dir / "report.md").read_text()
