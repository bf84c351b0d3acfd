"""A small UNet that predicts noise from (x_t, t) for 28x28 / 32x32 images.

It maps integer timesteps to a sinusoidal embedding and never sees the noise schedule, so the same network
works under any schedule. Layout after Ho et al. (2020), shrunk for CPU: residual blocks with GroupNorm,
skip connections between matching resolutions, self-attention only at the lowest resolution, where it is
cheap (7x7 for 28x28 inputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of the (integer or float) timesteps `t`, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    embedding = torch.cat([angles.cos(), angles.sin()], dim=1)
    return F.pad(embedding, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups; gcd keeps it valid for any width (base_channels 8 in tests)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weights so each residual branch starts as the identity (improved-diffusion)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (b, hw, c)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Noise (or velocity) prediction network: (x_t, t[, class]) → tensor shaped like x_t.

    Level i has width base_channels * channel_mults[i] and one residual block on each path; every level but
    the last halves the resolution (strided conv) and is restored by nearest upsampling, so the image size
    must be divisible by 2 ** (len(channel_mults) - 1). Upsampling without a conv and one up block per level
    (not DDPM's two) roughly halve the CPU cost, which the full-resolution level dominates.
    """

    def __init__(self, channels: int, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
                 num_classes: int = 0) -> None:
        super().__init__()
        self.base_channels = base_channels
        self.num_classes = num_classes
        emb_dim = 4 * base_channels
        widths = [base_channels * m for m in channel_mults]
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Class c has row c; row num_classes is "no class", the unconditional branch of classifier-free guidance.
        self.class_embedding = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList(
            ResBlock(w_in, w_out, emb_dim) for w_in, w_out in zip([base_channels, *widths[:-1]], widths)
        )
        self.downsample = nn.ModuleList(nn.Conv2d(w, w, 3, stride=2, padding=1) for w in widths[:-1])
        self.down_attention = SelfAttention(widths[-1])
        self.mid1 = ResBlock(widths[-1], widths[-1], emb_dim)
        self.mid_attention = SelfAttention(widths[-1])
        self.mid2 = ResBlock(widths[-1], widths[-1], emb_dim)
        # up[i] serves level i: input is the level below's output (or the middle's) concatenated with the skip.
        self.up = nn.ModuleList(
            ResBlock(w_below + w, w, emb_dim) for w, w_below in zip(widths, [*widths[1:], widths[-1]])
        )
        self.up_attention = SelfAttention(widths[-1])
        self.norm_out = group_norm(widths[0])
        self.conv_out = zero_init(nn.Conv2d(widths[0], channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """`y`: class per row (num_classes = no class); required by, and only by, a class-conditional UNet."""
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        if self.class_embedding is not None:
            if y is None:
                raise ValueError("a class-conditional UNet needs labels y (num_classes for 'no class')")
            emb = emb + self.class_embedding(y)
        lowest = len(self.down) - 1
        h = self.conv_in(x)
        skips = []
        for level, block in enumerate(self.down):
            h = block(h, emb)
            if level == lowest:
                h = self.down_attention(h)
            else:
                skips.append(h)
                h = self.downsample[level](h)
        skips.append(h)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        for level in range(lowest, -1, -1):
            if level < lowest:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.up[level](torch.cat([h, skips.pop()], dim=1), emb)
            if level == lowest:
                h = self.up_attention(h)
        return self.conv_out(F.silu(self.norm_out(h)))
