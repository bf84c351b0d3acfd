"""The eager FID network's building blocks compute what the TorchScript export's layers compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbench.components.evaluate.inception_net import FoldedConv, _convert

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*deprecated:FutureWarning")


class Conv2dLayer(nn.Module):
    """The export's layer, as its TorchScript code reads: conv, BatchNorm without scale (eps 1e-3), ReLU."""

    def __init__(self, weight: Tensor, beta: Tensor, mean: Tensor, var: Tensor, stride: int, padding: list[int]):
        super().__init__()
        self.weight, self.beta = nn.Parameter(weight), nn.Parameter(beta)
        self.mean, self.var = nn.Parameter(mean), nn.Parameter(var)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, None, [self.stride, self.stride], self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 0.001))


def scripted_layer(stride: int = 2, padding: list[int] = [0, 1]) -> torch.jit.ScriptModule:  # noqa: B006
    generator = torch.Generator().manual_seed(0)
    draw = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    layer = Conv2dLayer(draw(5, 3, 1, 3), draw(5), draw(5), draw(5).abs() + 0.01, stride, padding)
    return torch.jit.script(layer.eval())


def test_folded_conv_equals_conv_then_batch_norm_then_relu() -> None:
    scripted = scripted_layer()
    x = torch.randn(2, 3, 9, 8, generator=torch.Generator().manual_seed(1))
    folded = FoldedConv(scripted)
    assert folded.conv.stride == (2, 2) and folded.conv.padding == (0, 1)
    with torch.no_grad():
        expected, got = scripted(x), folded(x)
    assert (expected > 0).any() and (expected == 0).any()  # the ReLU both passes and cuts
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_folding_arithmetic_on_one_channel_in_closed_form() -> None:
    """w' = w / sqrt(var + eps), b' = beta - mean / sqrt(var + eps): var 3.999 and eps 1e-3 make sqrt exactly 2."""
    layer = Conv2dLayer(torch.full((1, 1, 1, 1), 6.0), torch.tensor([1.0]), torch.tensor([4.0]),
                        torch.tensor([3.999]), 1, [0, 0])
    folded = FoldedConv(torch.jit.script(layer.eval()))
    assert folded.conv.weight.item() == pytest.approx(3.0)
    assert folded.conv.bias.item() == pytest.approx(1.0 - 4.0 / 2.0)


def test_an_unknown_module_kind_is_refused_by_name() -> None:
    class Mystery(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    with pytest.raises(TypeError, match="Mystery"):
        _convert(torch.jit.script(Mystery()))
