"""Every file whole or not at all: result.json, the report's files and the figures go through atomic_files; a
damaged result.json is set aside and the job runs again rather than failing forever."""

import ast
import errno
import logging
import shutil
from pathlib import Path

import pytest

from mnist_study import atomic_files
from mnist_study.atomic_files import DiskFull
from mnist_study.reporting.report import write_report
from mnist_study.training.pipeline import train

from .conftest import ROOT, compose_train, snapshot

SOURCE = ROOT / "src" / "mnist_study"


def fill_the_disk_for(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes of a file called `name` (through its temp file) find no space left, as on a full disk."""
    real = atomic_files.open_for_writing

    def opener(path: Path):
        if path.name.startswith(f".{name}.tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    monkeypatch.setattr(atomic_files, "open_for_writing", opener)


def test_a_full_disk_at_result_json_leaves_none_and_the_same_job_finishes_later(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("model=softmax", output_dir=tmp_path / "run")
    fill_the_disk_for("result.json", monkeypatch)
    with pytest.raises(DiskFull) as raised:
        train(cfg)
    assert str(raised.value).startswith(f"no space left in {tmp_path / 'run'} to save result.json")
    assert "no partial result.json is left" in str(raised.value) and "\n" not in str(raised.value)
    assert not list((tmp_path / "run").glob("*result.json*"))
    monkeypatch.undo()
    result = train(cfg)  # the re-run finds the trained last.ckpt and only tests it
    assert (tmp_path / "run" / "result.json").is_file() and result["epochs"] == 1


@pytest.fixture(scope="module")
def finished_job(synthetic_mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "job"
    train(compose_train(synthetic_mnist, "model=softmax", output_dir=run_dir))
    return run_dir


@pytest.mark.parametrize("damage", ["", '{"test/acc": 0.9', '{"model": "softmax"}'], ids=["empty", "cut", "keys"])
def test_a_damaged_result_json_is_set_aside_and_the_job_runs_again(
    make_cfg, finished_job: Path, tmp_path, caplog, damage: str
) -> None:
    shutil.copytree(finished_job, tmp_path / "run")
    cfg = make_cfg("model=softmax", output_dir=tmp_path / "run")
    (tmp_path / "run" / "result.json").write_text(damage)
    with caplog.at_level(logging.WARNING, logger="mnist_study.runs.folders"):
        result = train(cfg)  # not JSONDecodeError forever: the job is unfinished
    assert result["test/acc"] > 0 and (tmp_path / "run" / "result.json.damaged").read_text() == damage
    assert "result.json is damaged" in caplog.text and "runs again" in caplog.text


@pytest.mark.parametrize("name", ["report.md", "grid_acc.png"])
def test_the_report_files_are_written_whole_or_not_at_all(sweep: Path, tmp_path: Path, monkeypatch, name: str) -> None:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep, sweep_dir)
    before = snapshot(sweep_dir)
    fill_the_disk_for(name, monkeypatch)
    with pytest.raises(DiskFull, match=f"no space left in {sweep_dir} to save {name}.*the previous {name} is intact"):
        write_report(sweep_dir)
    after = snapshot(sweep_dir)
    assert after[name] == before[name] and after.keys() == before.keys()  # no temp file left either


def written_files(path: Path) -> list[str]:
    """Calls in `path` that write a file other than through atomic_files: write_text/write_bytes, savefig,
    open(..., "w"/"a"), shutil.copy*."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
        modes += [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
        copies = name.startswith("copy") and getattr(getattr(function, "value", None), "id", "") == "shutil"
        opens = name == "open" and any(isinstance(m, str) and ("w" in m or "a" in m) for m in modes)
        if name in ("write_text", "write_bytes", "savefig") or copies or opens:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_the_package_writes_files_only_through_atomic_files() -> None:
    modules = [path for path in sorted(SOURCE.rglob("*.py")) if path.name != "atomic_files.py"]
    assert [hit for path in modules for hit in written_files(path)] == []


def test_a_sweep_whose_report_cannot_be_written_exits_1_in_one_line(sweep: Path, tmp_path, monkeypatch, capsys):
    """Hydra only warns about an error in a callback and exits with 0: the report callback says it and exits 1."""
    from omegaconf import OmegaConf

    from mnist_study.reporting.callbacks import StudyReport

    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep, sweep_dir)
    fill_the_disk_for("report.md", monkeypatch)
    with pytest.raises(SystemExit) as stopped:
        StudyReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: the sweep's report was not written: no space left in {sweep_dir} to save report")
