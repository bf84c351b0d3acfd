"""The DDPM UNet as Ho et al.'s code lays it out: shapes under every arch option, where attention sits, the
resampling convs, dropout in train mode only, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from genbench.config import ConfigError, load_config
from genbench.models import build_model
from genbench.models.ddpm import DDPMArch
from genbench.models.samplers import SAMPLERS
from genbench.models.unet import Downsample, ResBlock, SelfAttention, UNet, Upsample

REPO = Path(__file__).resolve().parents[2]


def wake(net: nn.Module) -> None:
    """Give the zero-initialised layers weights, so every branch (and its dropout) reaches the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.1)


def attention_sizes(net: UNet, x: torch.Tensor) -> list[int]:
    """The feature-map side each self-attention block sees in one forward pass, in the order they run."""
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
             for m in net.modules() if isinstance(m, SelfAttention)]
    with torch.no_grad():
        net(x, torch.tensor([3] * len(x)))
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize(("channels", "size", "mults", "blocks", "attention", "classes"), [
    (1, 28, (1, 2, 2), 1, (), 0),
    (1, 28, (1, 2, 2), 2, (14, 7), 0),
    (1, 28, (1, 2), 2, (28,), 3),
    (3, 32, (1, 2, 2, 2), 2, (16,), 0),  # Ho et al.'s CIFAR-10 layout, narrow
    (3, 32, (1,), 3, (32,), 0),
])
def test_the_unet_keeps_the_input_shape_under_every_option(channels: int, size: int, mults: tuple, blocks: int,
                                                           attention: tuple, classes: int) -> None:
    torch.manual_seed(0)
    net = UNet(channels, 8, mults, classes, num_res_blocks=blocks, attention_resolutions=attention, dropout=0.1,
               image_size=size)
    x = torch.randn(2, channels, size, size)
    y = torch.tensor([0, classes]) if classes else None
    out = net(x, torch.tensor([0, 9]), y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    down = [len(level.blocks) for level in net.down]
    up = [len(level.blocks) for level in net.up]
    assert down == [blocks] * len(mults) and up == [blocks + 1] * len(mults)  # Ho: one more on the way up


def test_attention_sits_at_the_requested_resolutions_and_in_the_middle() -> None:
    x = torch.randn(1, 1, 28, 28)

    def net(attention: tuple[int, ...], blocks: int = 2) -> UNet:
        return UNet(1, 8, (1, 2, 2), num_res_blocks=blocks, attention_resolutions=attention, image_size=28)

    assert attention_sizes(net(()), x) == [7]  # the middle block's, always
    # 2 blocks down at 14, the middle at 7, 3 blocks up at 14
    assert attention_sizes(net((14,)), x) == [14, 14, 7, 14, 14, 14]
    assert attention_sizes(net((14, 7)), x) == [14, 14, 7, 7, 7, 7, 7, 7, 14, 14, 14]
    assert attention_sizes(net((28,), blocks=1), x) == [28, 7, 28, 28]
    # DDPMArch's default is the same placement
    model = build_model("ddpm", 1, 28, {"base_channels": 8})
    assert DDPMArch().attention_resolutions == (14, 7)
    assert attention_sizes(model.net, x) == [14, 14, 7, 7, 7, 7, 7, 7, 14, 14, 14]


def test_resampling_is_a_strided_conv_down_and_nearest_then_conv_up() -> None:
    net = UNet(1, 8, (1, 2, 2), num_res_blocks=1)
    downs = [m for m in net.modules() if isinstance(m, Downsample)]
    ups = [m for m in net.modules() if isinstance(m, Upsample)]
    assert len(downs) == len(ups) == 2
    assert all(d.conv.stride == (2, 2) and d.conv.kernel_size == (3, 3) for d in downs)
    assert all(u.conv.stride == (1, 1) and u.conv.kernel_size == (3, 3) for u in ups)
    h = torch.randn(1, 16, 7, 7)
    expected = ups[0].conv(torch.repeat_interleave(torch.repeat_interleave(h, 2, dim=2), 2, dim=3))
    torch.testing.assert_close(ups[0](h), expected)  # nearest neighbour, then the conv


def test_dropout_acts_in_train_mode_only() -> None:
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), num_res_blocks=1, dropout=0.3)
    wake(net)
    assert all(block.dropout.p == 0.3 for block in net.modules() if isinstance(block, ResBlock))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 5])
    net.train()
    assert not torch.allclose(net(x, t), net(x, t))  # a new mask each pass
    net.eval()
    torch.testing.assert_close(net(x, t), net(x, t), rtol=0, atol=0)
    torch.manual_seed(0)
    plain = UNet(1, 8, (1, 2), num_res_blocks=1, dropout=0.0)
    wake(plain)
    plain.train()
    torch.testing.assert_close(plain(x, t), plain(x, t), rtol=0, atol=0)


def test_samplers_run_the_network_in_eval_mode() -> None:
    """A model left in train mode samples as in eval mode (no dropout), and stays in train mode."""
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 8, {"base_channels": 8, "channel_mults": (1, 2), "timesteps": 4,
                                       "attention_resolutions": (), "dropout": 0.5})
    wake(model.net)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    model.eval()
    expected = SAMPLERS["ddpm"](model, gens)
    model.train()
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    torch.testing.assert_close(SAMPLERS["ddpm"](model, gens), expected, rtol=0, atol=0)
    assert model.training


def test_attention_sizes_the_unet_lacks_are_errors_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"models\.ddpm\.arch\.attention_resolutions: \[16\].*\[28, 14, 7\]"):
        build_model("ddpm", 1, 28, {"base_channels": 8, "attention_resolutions": (16, 7)})
    with pytest.raises(ValueError, match=r"attention_resolutions: \[14, 7\] not among .* sizes \[32, 16, 8\]"):
        build_model("ddpm", 3, 32, {"base_channels": 8})  # the 28 px default on cifar10's 32 px
    with pytest.raises(ValueError, match=r"attention_resolutions \[5\] are not feature-map sizes"):
        UNet(1, 8, (1, 2), attention_resolutions=(5,), image_size=8)
    with pytest.raises(ValueError, match="needs image_size"):
        UNet(1, 8, (1, 2), attention_resolutions=(4,))
    build_model("ddpm", 3, 32, {"base_channels": 8, "attention_resolutions": (16, 8)})  # what cifar10 takes


@pytest.mark.parametrize(("value", "hint"), [([14, 14], "lists a size twice"), ([0], "greater than 0"),
                                             (14, "valid tuple"), ("all", "valid tuple")])
def test_bad_attention_resolutions_in_params_name_the_field(tmp_path: Path, value: object, hint: str) -> None:
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    raw["models"]["ddpm"]["arch"] = {"attention_resolutions": value}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(params, "full")
    assert "models.ddpm.arch.attention_resolutions" in str(info.value) and hint in str(info.value), str(info.value)


@pytest.mark.parametrize(("field", "value", "hint"), [("num_res_blocks", 0, "greater than 0"),
                                                      ("dropout", 1.0, "less than 1")])
def test_bad_unet_settings_in_params_name_the_field(tmp_path: Path, field: str, value: object, hint: str) -> None:
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    raw["models"]["ddpm"]["arch"] = {field: value}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(params, "full")
    assert f"models.ddpm.arch.{field}:" in str(info.value) and hint in str(info.value), str(info.value)
