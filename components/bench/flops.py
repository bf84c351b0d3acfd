"""FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`, and model FLOP utilisation (MFU).

The counter applies a formula per operator: matrix products and convolutions count 2·m·n·k (a multiply and an
add), attention its two batched products; elementwise work (normalisation, activations, the optimizer) counts
nothing, as in the usual MFU convention. Torch's table knows the CUDA attention kernels but not the CPU one
(`_scaled_dot_product_flash_attention_for_cpu`), nor the fused op that reaches the counter under
`inference_mode`, so a UNet's attention would count on a GPU and vanish on a CPU; the formulas below fill that
gap with the CUDA kernels' own convention, so the same step counts the same FLOPs on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten
Shape = Sequence[int]


def _attention(query: Shape, key: Shape, value: Shape, *_: object, **__: object) -> int:
    """softmax(Q Kᵀ) V: two batched products, over any leading (batch, head) dimensions."""
    batch, s_q, d_q = math.prod(query[:-2]), query[-2], query[-1]
    s_k, d_v = key[-2], value[-1]
    return 2 * batch * s_q * s_k * (d_q + d_v)


def _attention_backward(grad_out: Shape, query: Shape, key: Shape, value: Shape, *_: object, **__: object) -> int:
    """The scores recomputed (Q Kᵀ), then the gradients of V, of the scores, of Q and of K: five products."""
    batch, s_q, d_q = math.prod(query[:-2]), query[-2], query[-1]
    s_k, d_v = key[-2], value[-1]
    return 2 * batch * s_q * s_k * (3 * d_q + 2 * d_v)


ATTENTION_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
    aten.scaled_dot_product_attention: _attention,
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (which runs for real: the counter reads the shapes as operators execute)."""
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as counter:
        fn()
    return counter.get_total_flops()


def mfu(achieved_flops_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOP utilisation: the share of the device's peak rate that the counted FLOPs achieved."""
    if peak_flops_per_s <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops_per_s}")
    return achieved_flops_per_s / peak_flops_per_s
