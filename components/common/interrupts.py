"""SIGTERM and SIGINT while training: finish the step in flight, checkpoint it, and stop with `Interrupted`, whose
message says how to resume (the same command again). A scheduler's stop (Kubernetes and torchrun send SIGTERM, then
SIGKILL after a grace period) or a Ctrl-C then loses no finished step.

A second signal of the same kind takes its usual course (Ctrl-C twice stops at once). Only the main thread may
install handlers: elsewhere (a Prefect task's thread) signals keep their usual effect.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(Exception):
    """Training stopped on signal `signum` after checkpointing its last finished step."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """A context that records the first stop signal received while it is open: `received` is its number, or 0."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.signal(signum, self._catch)
                self._previous[signum] = signal.SIG_DFL if previous is None else previous  # None: set outside Python
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _catch(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signum
        signal.signal(signum, self._previous[signum])
