"""The test suite's fork server: a Python that imports torch, torchmetrics and Hydra once, then forks a child for
each `python <script>.py ...` that a test starts (tests/helpers/processes.py is the other side). Each child runs
the script as a fresh interpreter would: its argv, working folder, environment and standard streams, `__main__`,
signal handlers and exit code (atexit included), without the ~5 s that every fresh interpreter spends importing
torch and torchmetrics. Lightning is not imported here: how it sets up its loggers depends on whether Hydra's
logging is already in place when it is first imported, which differs between the entry points.

What a fork cannot give a child, the client gives to a fresh interpreter instead: an environment that differs in
what the interpreter and the imported libraries read as they start (processes.STARTUP_KEYS). Children share the
server's hash seed (PYTHONHASHSEED) where fresh interpreters would each draw one.

Protocol, over a SOCK_SEQPACKET socket (one JSON message per packet): first the server says {"ready": true}, or
{"unfaithful": why} and exits, when its imports printed something or started threads (or the kernel lacks
pidfd_open); then the test sends
{"argv", "cwd", "env"} with three file descriptors (the child's stdin, stdout, stderr) and gets {"started": pid}
back; when a child ends, the server sends {"exited": pid, "code": exit code, or -signal as subprocess does}. The end
of the connection ends the server."""

from __future__ import annotations

import json
import os
import runpy
import selectors
import socket
import sys
import tempfile

MAX_MESSAGE = 1 << 20


def import_what_every_entry_point_imports() -> str | None:
    """None, or why the children would not be what a fresh interpreter is: what the imports printed (a fresh
    interpreter would print it into the run's output) or the threads they started (a fork copies only the forking
    thread, and another one's locks could hang a child)."""
    with tempfile.TemporaryFile() as printed:
        saved = [os.dup(1), os.dup(2)]
        for fd in (1, 2):
            os.dup2(printed.fileno(), fd)
        try:
            import hydra  # noqa: F401
            import omegaconf  # noqa: F401
            import torch  # noqa: F401
            import torchmetrics  # noqa: F401
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
        printed.seek(0)
        if text := printed.read().decode(errors="replace").strip():
            return f"the imports printed: {text[:500]}"
    threads = len(os.listdir("/proc/self/task"))  # every thread, those of C libraries included
    return f"the imports started {threads - 1} thread(s)" if threads != 1 else None


def kernel_problem() -> str | None:
    try:
        os.close(os.pidfd_open(os.getpid()))  # how the server learns that a child ended (Linux 5.3 and later)
    except (AttributeError, OSError) as err:  # not in this Python's os module, or not in this kernel
        return f"no pidfd_open here ({err})"
    return None


def serve(connection: socket.socket) -> None:
    if (unfaithful := kernel_problem() or import_what_every_entry_point_imports()) is not None:
        connection.send(json.dumps({"unfaithful": unfaithful}).encode())
        return
    connection.send(json.dumps({"ready": True}).encode())
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
    sys.path.insert(0, os.path.dirname(script))  # as a fresh `python <script>` has it
    try:
        runpy.run_path(script, run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise  # the interpreter ends as a fresh one would: with the code, or by SIGINT
    except BaseException as err:  # the traceback a fresh interpreter prints starts in the script, not here
        trace = err.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename != script:
            trace = trace.tb_next
        sys.excepthook(type(err), err, err.with_traceback(trace or err.__traceback__).__traceback__)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    del sys.path[0]  # this folder: nothing imported here may come from the tests' helpers
    serve(socket.socket(fileno=int(sys.argv[1])))
