"""The tests' fork server (tests/helpers/zygote.py) must run a script as a fresh interpreter does, or every test
that starts an entry point through it proves less than it says."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from .helpers import processes
from .helpers.processes import ForkedProcess, child_environment, start_python

SCRIPT = """\
import atexit, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(__name__, sys.argv[1:], os.getcwd(), os.environ.get("MARK"), sys.path[0] == os.path.dirname(__file__))
print("stdin:", sys.stdin.readline().strip(), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "wait":
    print("waiting", flush=True)
    sys.stdin.readline()
if sys.argv[1] == "raise":
    raise ValueError("a bug")
sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else 0)
"""


def run(tmp_path: Path, argument: str, fresh: bool, monkeypatch: pytest.MonkeyPatch, stop: int | None = None):
    monkeypatch.setattr(processes, "FRESH", fresh)
    if not fresh and (why := processes.zygote().unfaithful) is not None:
        pytest.skip(f"no fork server here: {why}")  # e.g. -n 0, where OpenBLAS starts its threads on import
    script, work = tmp_path / "script.py", tmp_path / "work"
    script.write_text(SCRIPT)
    work.mkdir(exist_ok=True)
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    env = child_environment({"MARK": "here"})
    process = start_python([str(script), argument], work, env, stdin_read, stdout_write, stderr_write)
    for fd in (stdin_read, stdout_write, stderr_write):
        os.close(fd)
    assert isinstance(process, subprocess.Popen) == fresh
    with os.fdopen(stdin_write, "w") as stdin, os.fdopen(stdout_read) as stdout, os.fdopen(stderr_read) as stderr:
        stdin.write("hello\n")
        stdin.flush()
        if stop is not None:
            while stdout.readline() != "waiting\n":
                pass
            process.send_signal(stop)
        stdin.close()
        code = process.wait(timeout=60)
        return code, stdout.read(), stderr.read()


@pytest.mark.parametrize("argument", ["0", "3", "raise"])
def test_a_forked_child_runs_a_script_as_a_fresh_interpreter_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str
) -> None:
    fresh = run(tmp_path, argument, True, monkeypatch)
    forked = run(tmp_path, argument, False, monkeypatch)
    assert forked == fresh
    assert fresh[0] == {"0": 0, "3": 3, "raise": 1}[argument]
    assert fresh[1].startswith(f"__main__ ['{argument}'] {tmp_path / 'work'} here True\nstdin: hello\n")
    assert fresh[1].endswith("atexit ran\n")


def test_a_forked_child_dies_of_a_signal_as_a_fresh_interpreter_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = run(tmp_path, "wait", True, monkeypatch, stop=signal.SIGTERM)
    forked = run(tmp_path, "wait", False, monkeypatch, stop=signal.SIGTERM)
    assert forked == fresh and fresh[0] == -signal.SIGTERM


def test_a_startup_setting_of_its_own_gets_a_fresh_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("")
    env = child_environment({"PYTHONPATH": str(tmp_path)})
    process = start_python([str(script)], tmp_path, env, 0, 1, 2)
    assert process.wait(timeout=60) == 0 and not isinstance(process, ForkedProcess)
