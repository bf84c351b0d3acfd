"""Device choice shared by every stage that runs a network."""

from __future__ import annotations

from pathlib import Path

import torch


def pick_device(name: str) -> torch.device:
    """`auto` → CUDA when visible, else CPU; asking for CUDA without one is an input error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What the report's cost columns name: the GPU model, or the CPU model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")
    return f"{model} ({torch.get_num_threads()} threads)"
