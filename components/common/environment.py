"""One environment variable set for the length of a block, for the processes a call starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def environment(name: str, value: str | None) -> Iterator[None]:
    """`name` set to `value` inside the block (untouched when None), as it was after."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None and before is None:
            os.environ.pop(name, None)
        elif value is not None and before is not None:
            os.environ[name] = before
