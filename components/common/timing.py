"""Wall-clock timing that waits for the device: CUDA kernels run asynchronously, so a timer read without a
synchronize measures the launch, not the work."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device, repeats: int, warmup: int) -> tuple[float, T]:
    """(median seconds of `repeats` calls after `warmup` untimed ones, the last call's result). The median
    shrugs off the odd slow call (another process, a page fault) that a mean would average in."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result
