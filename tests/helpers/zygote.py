"""The test suite's fork server: a Python that imports torch and Lightning once, then forks a child for each
`python <script>.py ...` that a test starts (tests/helpers/processes.py is the other side). Each child runs the
script as a fresh interpreter would: its argv, working folder, environment and standard streams, `__main__`,
signal handlers and exit code (atexit included), without the ~5 s that every fresh interpreter spends importing
torch, torchmetrics and Lightning.

Protocol, over a SOCK_SEQPACKET socket (one JSON message per packet): the test sends {"argv", "cwd", "env"} with
three file descriptors (the child's stdin, stdout, stderr) and gets {"started": pid} back; when a child ends, the
server sends {"exited": pid, "code": exit code, or -signal as subprocess does}. An empty packet ends the server."""

from __future__ import annotations

import json
import os
import runpy
import selectors
import socket
import sys
import threading

import hydra  # noqa: F401  (the imports every entry point pays for, paid once here)
import lightning  # noqa: F401
import omegaconf  # noqa: F401
import torch  # noqa: F401

MAX_MESSAGE = 1 << 20


def serve(connection: socket.socket) -> None:
    if threading.active_count() != 1:  # a fork copies only the forking thread: another one's locks could hang a child
        raise RuntimeError(f"the imports started threads ({threading.enumerate()}): forking would not be safe")
    selector = selectors.DefaultSelector()
    selector.register(connection, selectors.EVENT_READ, data=None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                message, fds, _, _ = socket.recv_fds(connection, MAX_MESSAGE, 3)
                if not message:
                    return
                pid = os.fork()
                if pid == 0:
                    for other in list(selector.get_map().values()):
                        if other.data is not None:
                            os.close(other.fd)  # the other children's pidfds
                    selector.close()
                    connection.close()
                    run_script(json.loads(message), fds)  # raises SystemExit: this child never returns here
                for fd in fds:
                    os.close(fd)
                selector.register(os.pidfd_open(pid), selectors.EVENT_READ, data=pid)
                connection.send(json.dumps({"started": pid}).encode())
            else:
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(key.data, 0)
                connection.send(json.dumps({"exited": key.data, "code": os.waitstatus_to_exitcode(status)}).encode())


def run_script(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python <argv>` in `cwd` with `env`, then exit as that interpreter would."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
    sys.exit(0)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
