"""Starting, watching and stopping the stack's server processes: each in its own session (so stopping it stops its
children too), its output in a log file, tracked by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEALTH_TIMEOUT_S = 240.0


class StackError(RuntimeError):
    """A service did not start, or the stack file is stale."""


def start(name: str, cmd: list[str], folder: Path, extra_env: dict[str, str], *, cwd: Path | None = None,
          user: str | None = None, **info: Any) -> dict[str, Any]:
    """Start `cmd` with its output in folder/logs/NAME.log (as `user` when given: root starting PostgreSQL)."""
    log = folder / "logs" / f"{name}.log"
    # MLFLOW_AUTH_ADMIN_* in the caller's environment would override the auth config's admin
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API", "MLFLOW_AUTH_"))}
    as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
    # umask 077: what the servers write (databases, objects, logs) is their owner's alone, even in the stack folder
    # that root must leave traversable for PostgreSQL's account (postgres.py)
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env | extra_env, cwd=cwd,
                                   start_new_session=True, umask=0o077, **as_user)
    return {"pid": process.pid, "log": str(log), **info}


def wait_healthy(name: str, service: dict[str, Any], healthy: str | Callable[[], bool]) -> None:
    """Return once `healthy` (a URL answering 2xx, or a check) passes; raise if the process dies or time runs out."""
    check = (lambda: answers(healthy)) if isinstance(healthy, str) else healthy
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if not alive(service["pid"]):
            raise StackError(f"{name} exited during start-up; see {service['log']}")
        if check():
            return
        time.sleep(0.5)
    raise StackError(f"{name} did not answer within {HEALTH_TIMEOUT_S:.0f} s; see {service['log']}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) still answers kill(0); /proc tells them apart on Linux
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def stop(pid: int, grace_s: float = 15.0, first: signal.Signals = signal.SIGTERM) -> bool:
    """Send `first` to the process group started for a service, SIGKILL after a grace period; return once it is
    gone (False if it was not running)."""
    if not alive(pid):
        return False
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return False
    if not _gone_within(pid, grace_s):
        with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
            os.killpg(pid, signal.SIGKILL)
        _gone_within(pid, 10.0)  # even a killed process takes a moment to exit on a loaded machine
    return True


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
