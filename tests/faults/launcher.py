"""Start `genbench` commands as real processes in milliseconds, so that they can be killed with SIGKILL.

A `genbench` process spends ~14 s of a 2-core machine importing torch (and torch._dynamo, which the first
optimizer step pulls in), MLflow and matplotlib before it does anything. The fault tests start some twenty of
them, so one warm interpreter (`python -m tests.faults.launcher`, driven through `Launcher`) imports all of
that once, runs no torch work itself, and forks a child per command. The child is an ordinary `genbench`
process: it changes into the project, takes the given environment, sends its output to a log file and calls
the same Typer app the `genbench` script calls, exiting with its exit code. The test kills it by pid.

`die` makes a child kill itself with SIGKILL at a chosen point: just before the (after+1)-th call of a
function (`os.replace`: before a file is published; `os.rename`: before a folder is swapped in) whose
arguments mention `match`. That is a kill between two files, exactly where a crash is hardest on the outputs,
without the timing luck of a kill from outside.

Protocol, one JSON object per line: the test writes {cwd, args, env, log, die}; the launcher answers
{"pid": N} at once and {"pid": N, "returncode": R} when the child has exited (R < 0: killed by signal -R).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

WARM_MODULES = ("torch", "torch._dynamo", "torch.optim", "genbench.cli", "genbench.config", "tests.stages.conftest",
                "genbench.components.train.train", "genbench.components.sample.sample", "genbench.components.evaluate.evaluate",
                "genbench.components.report.report", "genbench.components.register.register", "mlflow", "mlflow.pyfunc",
                "matplotlib.pyplot")  # fmt: skip
READY = "ready"


@dataclass
class Child:
    pid: int
    log: Path


class Launcher:
    """The test's side: one warm launcher process; `start` a command (a test kills it by pid), `wait` for it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.faults.launcher"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=Path(__file__).resolve().parents[2])
        self.ready = False
        self.pending: Child | None = None  # started and not yet waited for

    def _read(self) -> Any:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fault launcher exited ({self.process.wait()})")
        return json.loads(line)

    def start(self, cwd: Path, args: list[str], log: Path, env: dict[str, str | None] | None = None,
              die: dict[str, Any] | None = None, stand_in_network: bool = False) -> Child:
        """Fork a `genbench ARGS` in `cwd` with `env` applied (None removes a variable); output goes to `log`.
        `stand_in_network` scores with the stages tier's 16-pixel stand-in instead of the FID network (seconds
        instead of a minute here; the tests that use it are about files, not numbers)."""
        if not self.ready:
            assert self._read() == READY
            self.ready = True
        if self.pending is not None:  # a test that failed between start and wait: end its child first
            self._kill_pending()
            self.wait(self.pending)
        request = {"cwd": str(cwd), "args": args, "env": env or {}, "log": str(log), "die": die,
                   "stand_in_network": stand_in_network}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        self.pending = Child(self._read()["pid"], Path(log))
        return self.pending

    def wait(self, child: Child) -> int:
        answer = self._read()
        assert answer["pid"] == child.pid, answer
        self.pending = None
        return answer["returncode"]

    def run(self, cwd: Path, args: list[str], log: Path, **options: Any) -> tuple[int, str]:
        """Start a command and wait for it: its return code and output."""
        child = self.start(cwd, args, log, **options)
        code = self.wait(child)
        return code, child.log.read_text(errors="replace")

    def _kill_pending(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # it may have ended already
            os.kill(self.pending.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.pending is not None:
            self._kill_pending()
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # still importing: it has started nothing worth waiting for
            self.process.kill()
            self.process.wait()


def _die_at(spec: dict[str, Any]) -> None:
    """Replace `module.name` by a wrapper that SIGKILLs this process at the (after+1)-th matching call."""
    module_name, name = spec["call"].rsplit(".", 1)
    module = importlib.import_module(module_name)
    original, seen = getattr(module, name), [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if spec.get("match", "") in " ".join(map(str, args)):
            seen[0] += 1
            if seen[0] > spec.get("after", 0):
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become `genbench ARGS` in the request's folder; never returns."""
    code = 1
    try:
        descriptor = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(request["cwd"])
        for key, value in request["env"].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if request["die"]:
            _die_at(request["die"])
        if request["stand_in_network"]:
            from tests.stages.conftest import swap_in_pixel_network

            swap_in_pixel_network(setattr)
        from genbench.cli import app

        try:
            app(request["args"], prog_name="genbench")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the genbench script would print for an uncaught exception
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(requests: IO[str], answers: IO[str]) -> None:
    for module in WARM_MODULES:
        importlib.import_module(module)
    if threading.active_count() > 1:  # a thread holding a lock at fork time would deadlock the child
        raise RuntimeError(f"warm imports started threads: {threading.enumerate()}")
    answers.write(json.dumps(READY) + "\n")
    answers.flush()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


if __name__ == "__main__":
    _serve(sys.stdin, sys.stdout)
