"""Mixed precision for the training loop: autocast for the forward pass, a gradient scaler per group for fp16.

GANs step their groups one after another within a step (critic, then generator), each on its own loss, so each
group gets its own scaler: one group's overflow never skips or rescales another's update. bf16 keeps fp32's
exponent range and needs no scaler; fp32 makes every method here a plain pass-through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """`precision` ∈ fp32 | bf16 | fp16 on `device`, with a scaler for each optimizer group."""

    def __init__(self, precision: str, device: torch.device, groups: dict[str, torch.optim.Optimizer]) -> None:
        if precision not in DTYPES:
            raise ValueError(f"train.precision: {precision!r}; allowed: {', '.join(DTYPES)}")
        self.dtype, self.device_type = DTYPES[precision], device.type
        self.scalers = {g: torch.amp.GradScaler(device.type, enabled=precision == "fp16") for g in groups}

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Forward passes in the low-precision dtype (a no-op in fp32)."""
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            yield

    def backward_and_step(self, group: str, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() and optimizer.step(), through the group's scaler (which skips steps with inf grads)."""
        scaler = self.scalers[group]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {group: scaler.state_dict() for group, scaler in self.scalers.items()}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        for group, scaler in self.scalers.items():
            scaler.load_state_dict(state[group])
