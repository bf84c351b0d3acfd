"""What a long measurement says while it runs, and what it leaves when it is stopped.

`genbench bench` runs for minutes (a DDPM sampler over all its steps on a CPU, training for a fixed time on a GPU).
Each phase says on stderr when it starts and when it ends, with its figure, and the figures of every finished phase
go at once into a JSON file that is rewritten atomically after each phase: a run stopped half-way (Ctrl-C, a
machine's time limit) keeps what it measured, and a log shows where it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from genbench.components.common.io import write_json

T = TypeVar("T")
Say = Callable[[str], None]


def jsonable(value: object) -> Any:
    """`value` as JSON data: pydantic models dumped, containers walked, anything else as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


class Phases:
    """The phases of one run, in order: a line to `say` as each starts and ends, and after each the record of
    every finished one written to `path` (when given) with `complete: false`; the caller writes the complete
    result over it, or removes it, at the end."""

    def __init__(self, say: Say | None = None, path: Path | None = None) -> None:
        self.say = say or (lambda _: None)
        self.path = path
        self.record: dict[str, Any] = {"complete": False, "phases": {}, "skipped": {}}
        self.started = time.perf_counter()

    def tell(self, text: str) -> None:
        """A line to the reader, stamped with the seconds since the run started."""
        self.say(f"[{time.perf_counter() - self.started:6.0f} s] {text}")

    def about(self, **fields: object) -> None:
        """What the run is (device, sizes, ...), recorded before its first figure."""
        self.record.update(jsonable(fields))
        self._save()

    def run(self, key: str, title: str, measure: Callable[[], T], figure: Callable[[T], str]) -> T:
        """`measure()`, announced as `title`, its result saved under `key` and said through `figure`."""
        self.tell(f"{title} ...")
        start = time.perf_counter()
        value = measure()
        seconds = time.perf_counter() - start
        self.record["phases"][key] = {"seconds": round(seconds, 3), "figures": jsonable(value)}
        self._save()
        self.tell(f"{title}: {figure(value)} ({seconds:.0f} s)")
        return value

    def skip(self, key: str, title: str, reason: str) -> None:
        """A phase not run here, with the reason, said and recorded as such."""
        self.record["skipped"][key] = reason
        self._save()
        self.tell(f"{title}: skipped, {reason}")

    def _save(self) -> None:
        if self.path is not None:
            write_json(self.path, self.record)
