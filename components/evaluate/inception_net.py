"""The FID network rebuilt as eager modules from its TorchScript file, BatchNorm folded into the convolutions.

Why not run the TorchScript as loaded: NVIDIA's export makes every block's branches `contiguous()` (NCHW)
before concatenating them, so a channels_last input is turned back and forth eleven times per image, and each
of the 94 convolutions is followed by a separate BatchNorm over its whole output. Rebuilt here, module for
module from the file's own structure and tensors (`original_name`, shapes, strides, pool settings), the network
stays NHWC throughout and each layer is one convolution with a bias and a ReLU. It is the same function
(features equal the TorchScript's to 1e-5: tests/stages/test_evaluate.py; the folding alone:
tests/unit/test_inception_net.py) and faster on CPU.

Folding follows TF's graph (Szegedy et al. 2016; the "inception-2015-12-05" export): BatchNorm without a
scale, eps 1e-3, so y = (conv(x) - mean) / sqrt(var + eps) + beta = conv'(x) + b' with
w' = w / sqrt(var + eps) and b' = beta - mean / sqrt(var + eps), computed in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BATCH_NORM_EPS = 1e-3  # the TorchScript's batch_norm call: TF's default epsilon for this network


class FoldedConv(nn.Module):
    """Convolution + BatchNorm (folded into weight and bias) + ReLU: one `Conv2dLayer` of the export."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        weight = scripted.weight.detach().double()
        inv_std = (scripted.var.detach().double() + BATCH_NORM_EPS).rsqrt()
        out_channels, in_channels, *kernel = weight.shape
        self.conv = nn.Conv2d(in_channels, out_channels, tuple(kernel), stride=scripted.stride,
                              padding=scripted.padding, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(weight * inv_std[:, None, None, None])
            self.conv.bias.copy_(scripted.beta.detach().double() - scripted.mean.detach().double() * inv_std)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x), inplace=True)


class Branches(nn.Module):
    """InceptionA-D: every child sees the block's input; their outputs are concatenated along channels."""

    def __init__(self, children: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(children)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class InceptionE(nn.Module):
    """InceptionE: two of its branches split into a 1×3 and a 3×1 convolution of one shared stem."""

    def __init__(self, parts: dict[str, nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(parts)

    def forward(self, x: Tensor) -> Tensor:
        p = self.parts
        a = p["tower_conv"](x)
        b = p["tower_1_conv_1"](p["tower_1_conv"](x))
        return torch.cat([p["conv"](x), p["tower_mixed_conv"](a), p["tower_mixed_conv_1"](a),
                          p["tower_1_mixed_conv"](b), p["tower_1_mixed_conv_1"](b),
                          p["tower_2_conv"](p["tower_2_pool"](x))], dim=1)


class Pool3(nn.Module):
    """The export's stem-to-pool3 network: [B, 3, 299, 299] scaled to [-1, 1] → [B, 2048]."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"the FID network takes 3-channel images, got {x.shape[1]}")
        return self.layers(x).reshape(-1, 2048)


def _convert(scripted: torch.jit.ScriptModule) -> nn.Module:
    """One exported module → its eager twin; an unknown kind raises rather than guessing."""
    kind = scripted.original_name
    children = dict(scripted.named_children())
    if kind == "Conv2dLayer":
        return FoldedConv(scripted)
    if kind == "Sequential":
        return nn.Sequential(*(_convert(child) for child in children.values()))
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return Branches([_convert(child) for child in children.values()])  # the export's cat order
    if kind == "InceptionE":
        return InceptionE({name: _convert(child) for name, child in children.items()})
    if kind == "MaxPool2d":
        return nn.MaxPool2d(scripted.kernel_size, scripted.stride, scripted.padding, scripted.dilation,
                            ceil_mode=scripted.ceil_mode)
    if kind == "AvgPool2d":
        return nn.AvgPool2d(scripted.kernel_size, scripted.stride, scripted.padding, ceil_mode=scripted.ceil_mode,
                            count_include_pad=scripted.count_include_pad)
    raise TypeError(f"the FID network holds a {kind} module, which genbench does not know how to rebuild")


def rebuild(scripted: torch.jit.ScriptModule) -> Pool3:
    """The eager, BatchNorm-folded, frozen twin of the TorchScript FID network (`net.layers` of the export)."""
    network = Pool3(_convert(scripted.net.layers)).eval()
    network.requires_grad_(False)
    return network
