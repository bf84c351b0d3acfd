"""The DDPM noise-prediction UNet of Ho et al. (2020), as in their official code (diffusion_tf/models/unet.py).

It maps integer timesteps to a sinusoidal embedding and never sees the noise schedule, so the same network
works under any schedule. The layout follows Ho's code block for block:

- each resolution level has `num_res_blocks` residual blocks on the way down and `num_res_blocks + 1` on the
  way up (the extra one takes the skip of the level's downsampling, or of the input conv);
- every level but the last halves the resolution with a strided 3×3 conv, and the way up doubles it with
  nearest-neighbour upsampling followed by a 3×3 conv (Ho's `resamp_with_conv=True`);
- a self-attention block follows every residual block whose feature map is one of `attention_resolutions`
  (Ho et al.: 16×16 on 32×32 CIFAR-10), and the middle block is always residual, attention, residual;
- residual blocks are GroupNorm-SiLU-conv twice with the time embedding added in between and dropout before
  the second conv; the last conv of each branch starts at zero, so every block starts as the identity.

Where we differ: GroupNorm takes up to 8 groups (Ho: 32) so that the tiny test widths stay valid; attention is
PyTorch's fused single-head `scaled_dot_product_attention` (the same maths as Ho's einsum, scale C^-1/2); and
an optional class embedding is added to the time embedding for classifier-free guidance (Ho et al. are
unconditional).
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
    """Zero a layer's weights so each residual branch starts as the identity (Ho et al.'s init_scale=0)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def feature_sizes(image_size: int, levels: int) -> list[int]:
    """The feature-map side of each resolution level of a UNet with `levels` levels on image_size² inputs."""
    return [image_size // 2**level for level in range(levels)]


class ConditionEmbedding(nn.Module):
    """(t[, class]) → one embedding per row: `features` sinusoidal features of t through Linear-SiLU-Linear (Ho
    et al.) plus, for a class-conditional network, a learned class embedding added to it. Class c has row c;
    row num_classes is "no class", the unconditional branch of classifier-free guidance."""

    def __init__(self, features: int, dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.features = features
        self.time_mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.class_embedding = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.features))
        if self.class_embedding is not None:
            if y is None:
                raise ValueError("a class-conditional network needs labels y (num_classes for 'no class')")
            emb = emb + self.class_embedding(y)
        return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, dropout before the second conv (Ho's
    `resnet_block`); a 1×1 conv on the shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels, residual (Ho's `attn_block`)."""

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


class Downsample(nn.Module):
    """Halve the resolution with a strided 3×3 conv (Ho's `downsample` with_conv)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then a 3×3 conv (Ho's `upsample` with_conv)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level of one path: residual blocks, each followed by attention or nothing, then a
    resampler (or nothing at the level where the path turns)."""

    def __init__(self, blocks: list[ResBlock], attend: bool, resample: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(SelfAttention(b.conv2.out_channels) if attend else nn.Identity()
                                        for b in blocks)
        self.resample = resample


class UNet(nn.Module):
    """Noise (or velocity) prediction network: (x_t, t[, class]) → tensor shaped like x_t.

    Level i has width base_channels * channel_mults[i]; the image size must be divisible by
    2 ** (len(channel_mults) - 1). `attention_resolutions` are feature-map sides (e.g. 14 and 7 on 28×28
    inputs), so they need `image_size`; a size the UNet does not have is a ValueError naming the field.
    `dropout` acts in train mode only (nn.Dropout).
    """

    def __init__(self, channels: int, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
                 num_classes: int = 0, *, num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (),
                 dropout: float = 0.0, image_size: int | None = None) -> None:
        super().__init__()
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be at least 1, got {num_res_blocks}")
        attention = set(attention_resolutions)
        if attention and image_size is None:
            raise ValueError("attention_resolutions are feature-map sizes: the UNet needs image_size")
        sizes = feature_sizes(image_size, len(channel_mults)) if attention else []
        if not attention <= set(sizes):
            raise ValueError(f"attention_resolutions {sorted(attention - set(sizes), reverse=True)} are not "
                             f"feature-map sizes of this UNet; on {image_size}×{image_size} images with "
                             f"channel_mults {list(channel_mults)} they are {sizes}")
        attend = [size in attention for size in sizes] or [False] * len(channel_mults)
        self.base_channels = base_channels
        self.num_classes = num_classes
        emb_dim = 4 * base_channels
        widths = [base_channels * m for m in channel_mults]
        last = len(widths) - 1
        self.embedding = ConditionEmbedding(base_channels, emb_dim, num_classes)
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)

        skips, width = [base_channels], base_channels  # the widths the down path leaves for the up path
        self.down = nn.ModuleList()
        for level, w in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(width, w, emb_dim, dropout))
                width = w
                skips.append(width)
            resample = Downsample(width) if level < last else nn.Identity()
            if level < last:
                skips.append(width)
            self.down.append(Level(blocks, attend[level], resample))

        self.mid1 = ResBlock(width, width, emb_dim, dropout)
        self.mid_attention = SelfAttention(width)
        self.mid2 = ResBlock(width, width, emb_dim, dropout)

        up = []
        for level in range(last, -1, -1):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(width + skips.pop(), widths[level], emb_dim, dropout))
                width = widths[level]
            up.append(Level(blocks, attend[level], Upsample(width) if level > 0 else nn.Identity()))
        self.up = nn.ModuleList(up)  # from the lowest resolution to the highest, in the order they run
        self.norm_out = group_norm(width)
        self.conv_out = zero_init(nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """`y`: class per row (num_classes = no class); required by, and only by, a class-conditional UNet."""
        emb = self.embedding(t, y)
        hs = [self.conv_in(x)]
        for level in self.down:
            for block, attention in zip(level.blocks, level.attentions):
                hs.append(attention(block(hs[-1], emb)))
            if not isinstance(level.resample, nn.Identity):
                hs.append(level.resample(hs[-1]))
        h = self.mid2(self.mid_attention(self.mid1(hs[-1], emb)), emb)
        for level in self.up:
            for block, attention in zip(level.blocks, level.attentions):
                h = attention(block(torch.cat([h, hs.pop()], dim=1), emb))
            h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
