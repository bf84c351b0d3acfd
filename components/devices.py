"""Device choice shared by every stage that runs a network."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """`auto` → CUDA when visible, else CPU; asking for CUDA without one is an input error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    return torch.device(name)
