"""A normal, non-editable install runs: the package finds nothing through the repository's src/ folder."""

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, data_overrides, run_script


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_wheel_installed_elsewhere_runs_a_sweep_and_its_report(synthetic_mnist, tmp_path: Path) -> None:
    source = tmp_path / "source"  # built from a copy: a build writes build/ and *.egg-info into the tree it builds
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"), str(source))
    (wheel,) = (tmp_path / "wheels").glob("mnist_study-*.whl")
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel))
    static = site / "mnist_study" / "inference" / "static"  # serve.py's page, package data
    assert {p.name for p in static.iterdir()} == {"index.html", "demo.js", "demo.css"}

    checkout = tmp_path / "checkout"  # a repository root without src/: what a user runs train.py from
    shutil.copytree(ROOT / "conf", checkout / "conf")
    shutil.copy(ROOT / "train.py", checkout / "train.py")
    env = {"PYTHONPATH": str(site)}  # ahead of the editable install of the development environment
    where = run_script("-c", "import mnist_study; print(mnist_study.__file__)", cwd=checkout, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr

    result = run_script(
        "train.py", "-m", "debug=fast", "model=softmax", *data_overrides(*synthetic_mnist), "hydra.sweep.dir=out",
        cwd=checkout, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((checkout / "out").glob("softmax-none*/result.json"))) == 1
    assert "1 of 1 runs complete" in (checkout / "out" / "report.md").read_text()
