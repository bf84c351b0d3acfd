"""The peak rate MFU is measured against: the vendor's dense bf16 figure for known GPUs, else what this device
sustains on a large matrix product, measured in the same run: in bf16 where the hardware computes it, in fp32 where
bf16 is emulated (a CPU without AMX or avx512-bf16), whose emulated rate is far below anything the device's fast
path reaches and would make the run's slowest phase of a figure nobody uses.

Vendor figures are dense: NVIDIA's datasheets print bf16 Tensor Core rates with 2:4 structured sparsity (marked
"with sparsity"), twice the dense rate that a convolution or an ordinary matrix product can reach. A CPU has no
such figure that it reaches in practice, so its peak is measured; so is a GPU missing from the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel

from genbench.components.common.timing import timed


@dataclass(frozen=True)
class VendorPeak:
    pattern: str  # matched against torch.cuda.get_device_name, case-insensitive; first match wins
    part: str
    flops_per_s: float
    source: str


# Word boundaries keep "RTX A1000" from matching A100 and "GH200" from matching H200. SXM parts report no form
# factor ("NVIDIA H100 80GB HBM3", "NVIDIA H200"), so they come after the PCIe and NVL rows of their chip.
GPU_BF16_DENSE = (
    VendorPeak(r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756.5e12,
               "NVIDIA H100 datasheet: BF16 Tensor Core 1,513 TFLOPS with sparsity (PCIe), dense half"),
    VendorPeak(r"\bH100\b.*\bNVL\b", "H100 NVL", 835.5e12,
               "NVIDIA H100 datasheet: BF16 Tensor Core 1,671 TFLOPS with sparsity (NVL), dense half"),
    VendorPeak(r"\bH100\b", "H100 SXM", 989.5e12,
               "NVIDIA H100 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (SXM), dense half"),
    VendorPeak(r"\bH200\b.*\bNVL\b", "H200 NVL", 835.5e12,
               "NVIDIA H200 datasheet: BF16 Tensor Core 1,671 TFLOPS with sparsity (NVL), dense half"),
    VendorPeak(r"\bH200\b", "H200 SXM", 989.5e12,
               "NVIDIA H200 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (SXM), dense half"),
    VendorPeak(r"\bA100\b", "A100", 312e12,
               "NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS dense (624 with sparsity), SXM and PCIe"),
)


def vendor_peak(device_name: str) -> VendorPeak | None:
    """The table's row for a GPU name, or None for a GPU (or CPU) it does not know."""
    return next((row for row in GPU_BF16_DENSE if re.search(row.pattern, device_name, re.IGNORECASE)), None)


MATMUL_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def matmul_flops_per_s(device: torch.device, size: int, repeats: int, warmup: int, dtype: str = "bf16") -> float:
    """FLOP/s of a size×size by size×size matrix product in `dtype` on `device` (2·size³ FLOPs), median of
    `repeats`."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, MATMUL_DTYPES[dtype]) for _ in range(2))
    seconds, _ = timed(lambda: a @ b, device, repeats, warmup)
    return 2 * size**3 / seconds


class Peak(BaseModel):
    flops_per_s: float  # the denominator of MFU
    kind: Literal["vendor", "measured"]
    source: str  # the datasheet figure it came from, or the measurement
    matmul_size: int
    matmul_flops_per_s: float  # what a size×size matrix product in matmul_dtype sustained here, in this run
    matmul_dtype: Literal["bf16", "fp32"] = "bf16"  # fp32 where bf16 is emulated


def device_peak(device: torch.device, device_name: str, matmul_size: int, repeats: int, warmup: int,
                dtype: Literal["bf16", "fp32"] = "bf16") -> Peak:
    """The vendor's dense bf16 peak for a known GPU, else the measured `dtype` matrix-product rate; the measured
    rate is recorded either way (on a known GPU it shows how much of the datasheet figure is reachable)."""
    measured = matmul_flops_per_s(device, matmul_size, repeats, warmup, dtype)
    known = vendor_peak(device_name) if device.type == "cuda" else None
    if known is not None:
        return Peak(flops_per_s=known.flops_per_s, kind="vendor", source=known.source, matmul_size=matmul_size,
                    matmul_flops_per_s=measured, matmul_dtype=dtype)
    return Peak(flops_per_s=measured, kind="measured", source=f"{dtype} {matmul_size}×{matmul_size} matrix product",
                matmul_size=matmul_size, matmul_flops_per_s=measured, matmul_dtype=dtype)
