"""`story ui` and `story mlflow-ui`: a local server as a child process that stops, with every process it
started, when the command gets Ctrl-C (SIGINT) or SIGTERM.

`dg dev` shuts its webserver, daemon and code servers down on a KeyboardInterrupt only, and a process
started in the background from a non-interactive shell inherits SIGINT as ignored. So the server runs
in its own session with SIGINT restored; a signal to this command becomes a SIGINT to the server,
then, if it has not stopped within ``grace`` seconds, SIGTERM and SIGKILL to its whole process group
(which also ends runs the daemon launched).
"""

import os
import signal
import subprocess
import time


def _child_setup() -> None:  # in the child, before exec: Ctrl-C is a KeyboardInterrupt there
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve(cmd: list[str], env: dict | None = None, cwd: str | None = None, grace: float = 20.0) -> int:
    """Run ``cmd`` until it exits or this process gets SIGINT/SIGTERM; -> its exit code (130/143 when stopped)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True, preexec_fn=_child_setup)
    stop: list[int] = []

    def on_signal(signum, frame):
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while proc.poll() is None and not stop:
            time.sleep(0.2)
        if proc.poll() is not None:
            return proc.returncode
        _stop_group(proc, grace)
        return 128 + stop[0]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_group(proc, 0)  # whatever is left of its group (runs it launched) ends with it


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # the leader is gone; its group id is its pid
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig == signal.SIGINT:
            if proc.poll() is None:
                _send(proc.pid, sig, group=False)  # the server shuts its children down itself
        else:
            _send(pgid, sig, group=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
            time.sleep(0.1)
        if proc.poll() is not None and not _group_alive(pgid):
            return


def _send(pid: int, sig: int, group: bool) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
