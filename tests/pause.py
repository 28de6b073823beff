"""A callback that test subprocesses add with +callbacks.pause=...: it holds a run at a chosen point, so that a
test can signal it or start a second run beside it, synchronized by pipes rather than by sleeping."""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
import time
import weakref
from pathlib import Path
from typing import Any, BinaryIO

from lightning import Callback, LightningModule, Trainer

from tests.helpers.processes import child_environment, start_python

MARKER = "PAUSED"


def pause_override(epoch: int = 0) -> str:
    """The command-line override that adds the pause to a train.py run."""
    return f"+callbacks.pause={{_target_:tests.pause.PauseAtEpoch,epoch:{epoch}}}"


class PauseAtEpoch(Callback):
    """At the start of epoch `epoch` (after the earlier epochs' checkpoints are written): print
    `PAUSED pid=<pid>` on stdout and wait for a line on stdin (or its end)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            print(f"{MARKER} pid={os.getpid()}", flush=True)
            sys.stdin.readline()


# --- the test's side -----------------------------------------------------------------------------------------


class Run:
    """A script run as a child process whose stdout the test reads (stderr goes to a file, so no pipe fills up)."""

    def __init__(self, *args: str, cwd: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"stderr-{len(list(log_dir.glob('stderr-*')))}.txt"
        stdin_read, stdin_write = os.pipe()
        self.stdout_fd, stdout_write = os.pipe()
        with open(self.stderr_path, "w") as stderr:
            self.proc = start_python(list(args), cwd, child_environment(env), stdin_read, stdout_write, stderr.fileno())
        os.close(stdin_read)
        os.close(stdout_write)
        self.stdin = os.fdopen(stdin_write, "wb")
        self.stdout = b""
        # A test that fails before finish() leaves no process or pipe behind once the Run is collected (or at exit).
        weakref.finalize(self, stop, self.proc, self.stdin, self.stdout_fd)

    def wait_paused(self, timeout: float = 300) -> int:
        """Read stdout until the PAUSED line; returns the paused process's pid. The timeout only guards
        against a hang: the wait itself ends on the line (or on the end of stdout)."""
        return int(self.wait_for_line(MARKER, timeout).split("pid=")[1])

    def wait_for_line(self, start: str, timeout: float = 300) -> str:
        """Read stdout until a line that starts with `start` (or contains it after a log prefix); returns it."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            chunk = self.read(left)
            if chunk is None:
                break
            if not chunk:
                raise AssertionError(f"the run ended before pausing:\n{self.stderr()[-3000:]}")
            self.stdout += chunk
            for line in self.stdout.decode(errors="replace").splitlines():
                if line.startswith(start) or f"] - {start}" in line:
                    return line
        self.proc.kill()  # a failed test leaves no process behind
        raise AssertionError(f"no {start} line within {timeout} s:\n{self.stderr()[-3000:]}")

    def read(self, timeout: float) -> bytes | None:
        """What stdout has now (b"" at its end), or None if nothing came within `timeout` seconds."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.stdout_fd, selectors.EVENT_READ)
            return os.read(self.stdout_fd, 65536) if selector.select(timeout) else None

    def resume(self) -> None:
        self.stdin.write(b"go\n")
        self.stdin.flush()

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        """Close stdin (a paused run goes on), wait for the end; returns (exit code, stdout, stderr)."""
        self.stdin.close()
        deadline = time.monotonic() + timeout
        while chunk := self.read(max(deadline - time.monotonic(), 0)):
            self.stdout += chunk
        code = self.proc.wait(max(deadline - time.monotonic(), 0))
        return code, self.stdout.decode(errors="replace"), self.stderr()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def stop(process: Any, stdin: BinaryIO, stdout_fd: int) -> None:
    with contextlib.suppress(OSError):  # it has ended, or the fork server has (at exit)
        if process.poll() is None:
            process.kill()
    stdin.close()
    with contextlib.suppress(OSError):
        os.close(stdout_fd)
