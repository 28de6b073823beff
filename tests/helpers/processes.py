"""How the tests start `python <script> ...`: a script (`train.py`, `q1.py`, ...) runs in a child forked from
tests/helpers/zygote.py, which has imported torch and torchmetrics once per test worker. A fresh interpreter runs
instead for anything else (`-c`, `-m`), for an environment that differs from the server's in what is read at
startup (STARTUP_KEYS: a test's PYTHONPATH or thread count), where the server could not be faithful (it says why
as it starts: zygote.serve), and for every run with MNIST_STUDY_TEST_FRESH_PROCESSES=1. Both kinds of process
answer the subset of subprocess.Popen the tests use."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

ZYGOTE = Path(__file__).with_name("zygote.py")
FRESH = os.environ.get("MNIST_STUDY_TEST_FRESH_PROCESSES") == "1"
# Environment variables that the interpreter, the dynamic loader or the libraries the server imported read once,
# as they start: a request that sets them otherwise than the server had them needs a fresh interpreter. (Not
# PYTORCH_*: torch reads PYTORCH_NVML_BASED_CUDA_CHECK at each device query, and train.py's own start removes it.)
STARTUP_KEYS = ("PYTHON", "LD_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "TORCH_", "MALLOC_")


def start_python(
    args: list[str], cwd: Path, env: dict[str, str], stdin: int, stdout: int, stderr: int
) -> subprocess.Popen | ForkedProcess:
    """`python *args` in `cwd` with exactly `env`, its standard streams on the given file descriptors."""
    server = None if FRESH or not args[0].endswith(".py") else zygote()
    if server is None or not server.can_run(env):
        return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr)
    cwd = Path(os.path.abspath(cwd))
    return server.start([str(cwd / args[0]), *args[1:]], cwd, env, [stdin, stdout, stderr])


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A test's child sees this process's environment plus `extra`: its output unbuffered (read as it comes) and
    without HYDRA_FULL_ERROR (a user error is one line, as the user sees it)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    environment.pop("HYDRA_FULL_ERROR", None)
    return environment


def startup_settings(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(STARTUP_KEYS)}


class ForkedProcess:
    def __init__(self, server: Zygote, pid: int, args: list[str]) -> None:
        self.server, self.pid, self.args = server, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # a pid that has ended may already be another process's
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """This test process's connection to its fork server, started on first use and ended at exit."""

    def __init__(self) -> None:
        self.connection, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env = child_environment()
        self.process = subprocess.Popen(
            [sys.executable, str(ZYGOTE), str(theirs.fileno())], pass_fds=[theirs.fileno()], env=self.env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        theirs.close()
        self.exits: dict[int, int] = {}
        self.lock = threading.Lock()
        self.unfaithful = self.receive(timeout=None).get("unfaithful")
        if self.unfaithful is not None:
            warnings.warn(f"tests start fresh interpreters: {self.unfaithful}", stacklevel=2)

    def can_run(self, env: dict[str, str]) -> bool:
        return self.unfaithful is None and startup_settings(env) == startup_settings(self.env)

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], fds: list[int]) -> ForkedProcess:
        request = json.dumps({"argv": argv, "cwd": str(cwd), "env": env}).encode()
        with self.lock:
            socket.send_fds(self.connection, [request], fds)
            while "started" not in (message := self.receive(timeout=None)):
                pass
        return ForkedProcess(self, message["started"], argv)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The child's exit code, waiting up to `timeout` seconds (None: as long as it runs) for it to end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while pid not in self.exits:
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                if not self.receive(timeout=left) and left == 0:
                    return None
            return self.exits.pop(pid)  # the ForkedProcess keeps it; the pid may be given to a later child

    def receive(self, timeout: float | None) -> dict:
        self.connection.settimeout(timeout)
        try:
            packet = self.connection.recv(1 << 16)
        except (TimeoutError, BlockingIOError):  # none within `timeout` (0: non-blocking)
            return {}
        if not packet:
            raise RuntimeError(f"the test fork server ended (exit code {self.process.wait()}); see the output above")
        message = json.loads(packet)
        if "exited" in message:
            self.exits[message["exited"]] = message["code"]
        elif "started" in message:
            self.exits.pop(message["started"], None)  # an earlier child's, with the same pid
        return message

    def close(self) -> None:
        self.connection.close()  # the server reads the end of the connection and exits
        self.process.wait(timeout=60)


_server: Zygote | None = None


def zygote() -> Zygote:
    global _server
    if _server is None:
        _server = Zygote()
        atexit.register(_server.close)
    return _server
