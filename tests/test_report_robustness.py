"""report.py reports what it can: each job it cannot read is listed with its reason, and a folder that holds no
train.py sweep is one line."""

import shutil
from pathlib import Path

import pytest

from mnist_study.reporting.report import main, write_report

from .conftest import ROOT, run_script


def job(sweep_dir: Path, model: str, regularizer: str) -> Path:
    return next(sweep_dir.glob(f"{model}-{regularizer}*"))


def test_a_report_lists_each_unreadable_job_with_its_reason_and_reports_the_rest(sweep: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep, sweep_dir)
    (job(sweep_dir, "softmax", "none") / "result.json").write_text('{"test/acc": 0.9')  # cut short
    (job(sweep_dir, "softmax", "bn") / "result.json").write_text('{"model": "softmax"}')  # keys missing
    (job(sweep_dir, "mlp", "bn") / ".hydra" / "config.yaml").write_text("model: [unclosed\n")  # not YAML
    q1_job = sweep_dir / "k=4"
    (q1_job / ".hydra").mkdir(parents=True)
    (q1_job / ".hydra" / "config.yaml").write_text("k: 4\nepochs: 200\nlr: 0.003\n")  # another program's job

    runs = write_report(sweep_dir)
    reasons = {run.name: run.error for run in runs}
    assert reasons[job(sweep_dir, "mlp", "none").name] is None  # the readable job is reported
    assert "result.json is damaged (not JSON" in reasons[job(sweep_dir, "softmax", "none").name]
    assert (
        "result.json is damaged (it has no test/acc, test/loss, regularizer, seed, parameters)"
        in reasons[job(sweep_dir, "softmax", "bn").name]
    )
    assert "its .hydra/config.yaml does not read" in reasons[job(sweep_dir, "mlp", "bn").name]
    assert "not a train.py run" in reasons["k=4"]
    report = (sweep_dir / "report.md").read_text()
    assert "1 of 5 runs complete" in report
    assert all(f"- `{name}`: unreadable: " in report for name, error in reasons.items() if error)


def test_a_folder_without_a_train_py_sweep_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q1_job = tmp_path / "q1-sweep" / "k=4"
    (q1_job / ".hydra").mkdir(parents=True)
    (q1_job / ".hydra" / "config.yaml").write_text("k: 4\n")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    for folder, message in [
        (tmp_path / "q1-sweep", "holds no train.py runs (1 job folder(s), none with a train.py config"),
        (tmp_path / "photos", "no runs in"),
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path / "photos" / "cat.jpg", "is a file, not a directory"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main([str(folder)])
        assert str(stopped.value.code).startswith(f"error: {folder} {message}".replace(f"{folder} no", "no"))
        assert "\n" not in str(stopped.value.code)


def test_report_py_on_a_damaged_sweep_exits_0_with_one_summary_line(sweep: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep, sweep_dir)
    (job(sweep_dir, "mlp", "bn") / "result.json").write_bytes(b"")
    result = run_script("report.py", str(sweep_dir), cwd=ROOT)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"3 of 4 runs reported: {sweep_dir / 'report.md'}"


def test_an_unwritable_out_dir_or_a_sweep_without_one_result_is_one_line_and_exit_1(
    sweep: Path, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([str(sweep), "/proc/report"])
    assert str(stopped.value.code).startswith("error: OUT_DIR=/proc/report cannot be written")
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep, sweep_dir)
    for result in sweep_dir.glob("*/result.json"):
        result.write_bytes(b"{")
    with pytest.raises(SystemExit) as stopped:
        main([str(sweep_dir)])
    assert (
        stopped.value.code
        == f"error: no run of {sweep_dir} has a result: {sweep_dir / 'report.md'} lists each with its reason"
    )
