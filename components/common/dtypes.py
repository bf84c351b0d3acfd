"""Mixed precision for the training loop: autocast for the forward pass, a gradient scaler per group for fp16,
gradient clipping, and the choice of `auto`.

GANs step their groups one after another within a step (critic, then generator), each on its own loss, so each
group gets its own scaler: one group's overflow never skips or rescales another's update. bf16 keeps fp32's
exponent range and needs no scaler; fp32 makes every method here a plain pass-through.

`auto` takes bf16 only where the hardware computes it natively: there it is the fast path for wide networks,
whose convolutions shrink with bf16; on a CPU without AMX or avx512-bf16, bf16 is emulated and slower than fp32,
so auto stays fp32 there. Narrow networks can lose even on AMX, where the casts cost more than the small
convolutions save, so a profile may pin `precision`. The step times behind both rules are in docs/benchmarks.md
("CPU ratios").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which its bf16 kernels still run in hardware: names with BF16,
# FP16 or AMX, the AVX10 levels, and no cap at all.
_ONEDNN_BF16_ISAS = ("BF16", "FP16", "AMX", "AVX10", "ALL", "DEFAULT")


def _onednn_caps_bf16() -> bool:
    """Whether the oneDNN ISA cap in the environment, if any, leaves out the bf16 instructions."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return bool(cap) and not any(name in cap.upper() for name in _ONEDNN_BF16_ISAS)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a GPU that supports it, a CPU with AMX or avx512-bf16 whose
    kernels are not capped below it (`ATEN_CPU_CAPABILITY=avx2` or an AVX2 `ONEDNN_MAX_CPU_ISA` run the AVX2
    kernels, bf16 emulated: what an AVX2-only CPU runs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or torch.backends.cpu.get_cpu_capability() != "AVX512" or _onednn_caps_bf16():
        return False
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def resolve(precision: str, channels_last: str | bool, device: torch.device) -> tuple[str, bool]:
    """(precision, channels_last) to train with: `auto` resolved for `device` as the module docstring says."""
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    if channels_last == "auto":
        channels_last = precision != "fp32"
    return precision, bool(channels_last)


class MixedPrecision:
    """`precision` ∈ fp32 | bf16 | fp16 on `device`, with a scaler for each optimizer group and, when
    `grad_clip` > 0, each group's gradient norm clipped to it (after unscaling) before its step."""

    def __init__(self, precision: str, device: torch.device, groups: dict[str, torch.optim.Optimizer],
                 grad_clip: float = 0.0) -> None:
        if precision not in DTYPES:
            raise ValueError(f"train.dtype: {precision!r}; allowed: {', '.join(DTYPES)}")
        self.dtype, self.device_type, self.grad_clip = DTYPES[precision], device.type, grad_clip
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
        if self.grad_clip:
            scaler.unscale_(optimizer)
            params = [p for param_group in optimizer.param_groups for p in param_group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {group: scaler.state_dict() for group, scaler in self.scalers.items()}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        for group, scaler in self.scalers.items():
            scaler.load_state_dict(state[group])
