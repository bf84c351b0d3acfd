"""The UNet that produced the golden sampler values in test_samplers.py (genbench f8729df), kept here so those
values go on pinning the samplers' maths alone now that `models/unet.py` follows Ho et al.'s layout.

One residual block per level on each path, attention only at the lowest resolution, upsampling without a
conv: built from the production blocks, which hold the same parameters in the same order as then.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbench.models.unet import ResBlock, SelfAttention, group_norm, timestep_embedding, zero_init


class GoldenUNet(nn.Module):
    def __init__(self, channels: int, base_channels: int, channel_mults: Sequence[int], num_classes: int = 0) -> None:
        super().__init__()
        self.base_channels, self.num_classes = base_channels, num_classes  # row num_classes: "no class"
        emb_dim = 4 * base_channels
        widths = [base_channels * m for m in channel_mults]
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
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
        self.up = nn.ModuleList(
            ResBlock(w_below + w, w, emb_dim) for w, w_below in zip(widths, [*widths[1:], widths[-1]])
        )
        self.up_attention = SelfAttention(widths[-1])
        self.norm_out = group_norm(widths[0])
        self.conv_out = zero_init(nn.Conv2d(widths[0], channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        if self.class_embedding is not None:
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
