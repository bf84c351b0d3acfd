"""The training recipe's pieces, each with exact numbers: optimizers, warmup, gradient clipping, precision,
and the VAE-GAN losses of Larsen et al.'s algorithm 1."""

from __future__ import annotations

import math

import pytest
import torch

from genbench.components.common.dtypes import MixedPrecision, resolve
from genbench.components.train.train import make_optimizer, warmup_factor
from genbench.models import build_model, family


def test_wgan_with_clipping_trains_with_rmsprop_at_arjovskys_rate_and_the_others_with_adam() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    wgan = make_optimizer(family("wgan").train(), params)
    assert isinstance(wgan, torch.optim.RMSprop) and wgan.defaults["lr"] == 5e-5
    for name in ("dcgan", "wgan_gp", "vae", "ddpm"):
        assert isinstance(make_optimizer(family(name).train(), params), torch.optim.Adam), name
    assert family("wgan_gp").train().steps == 200_000  # Gulrajani et al.'s MNIST code


def test_warmup_rises_linearly_then_holds() -> None:
    assert [warmup_factor(step, 4) for step in (1, 2, 3, 4, 5, 100)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(1, 0) == 1.0
    assert family("ddpm").train().warmup_steps == 5000 and family("ddpm").train().grad_clip == 1.0  # Ho et al.


def test_gradient_clipping_scales_the_gradient_to_the_norm_before_the_step() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([p], lr=1.0)
    precision = MixedPrecision("fp32", torch.device("cpu"), {"model": sgd}, grad_clip=1.0)
    precision.backward_and_step("model", 3 * p[0] + 4 * p[1], sgd)  # gradient (3, 4), norm 5
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(p.detach(), torch.tensor([-0.6, -0.8]))
    unclipped = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([unclipped], lr=1.0)
    MixedPrecision("fp32", torch.device("cpu"), {"model": sgd}).backward_and_step("model", 3 * unclipped[0], sgd)
    torch.testing.assert_close(unclipped.detach(), torch.tensor([-3.0, 0.0]))


def test_auto_precision_takes_bf16_and_channels_last_only_on_native_bf16_hardware(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve("auto", "auto", cpu) == ("fp32", False)
    assert resolve("bf16", "auto", cpu) == ("bf16", True)
    assert resolve("auto", True, cpu) == ("fp32", True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert resolve("auto", "auto", cpu) == ("bf16", True)
    assert resolve("fp32", "auto", cpu) == ("fp32", False)


@pytest.mark.parametrize(("capability", "onednn_cap", "native"), [
    ("AVX512", None, True), ("AVX512", "AVX512_CORE_AMX", True), ("AVX512", "avx512_core_bf16", True),
    ("AVX512", "ALL", True), ("AVX2", None, False), ("AVX512", "AVX2", False), ("AVX512", "AVX512_CORE_VNNI", False),
])
def test_auto_precision_is_fp32_where_the_kernels_are_capped_below_bf16(
    monkeypatch: pytest.MonkeyPatch, capability: str, onednn_cap: str | None, native: bool,
) -> None:
    """Forcing the AVX2 kernels on an AMX host runs what an AVX2-only CPU runs: bf16 emulated, so auto is fp32."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if onednn_cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)
    assert resolve("auto", "auto", torch.device("cpu"))[0] == ("bf16" if native else "fp32")


# bf16 keeps 8 bits of mantissa: the DDPM loss of one tiny batch moves by well under 0.5 % (measured 0.014 %).
BF16_LOSS_RTOL = 0.005


def test_bf16_autocast_gives_the_fp32_loss_on_a_tiny_batch() -> None:
    arch = family("ddpm").arch(base_channels=8, timesteps=10)
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 28, arch)
    with torch.no_grad():  # away from the zero-initialised output layer, whose output is exact in any dtype
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    losses = {}
    for name in ("fp32", "bf16"):
        precision = MixedPrecision(name, torch.device("cpu"), {"model": torch.optim.SGD(model.parameters(), lr=0)})
        torch.manual_seed(1)
        with precision.autocast():
            losses[name] = model.training_losses(x, "model")["loss"].float().item()
    assert losses["bf16"] != losses["fp32"]  # autocast did run in bf16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=BF16_LOSS_RTOL)


def _vae_gan_with_constant_logits(gamma: float) -> torch.nn.Module:
    """A tiny VAE-GAN whose discriminator says logit 0 (D = 1/2) to everything."""
    torch.manual_seed(0)
    model = build_model("vae_gan", 1, 28, family("vae_gan").arch(base_channels=8, latent_dim=4, gamma=gamma))
    head = model.d_head[0]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return model


def test_vae_gan_sums_the_two_fake_terms_as_larsens_algorithm_1() -> None:
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    # d: -log D(x) - log(1 - D(Dec(Enc(x)))) - log(1 - D(Dec(z))) = 3 log 2 at D = 1/2 (averaging the two fake
    # terms would give 2 log 2)
    d = _vae_gan_with_constant_logits(gamma=0.0).training_losses(x, "d")["loss"]
    assert d.item() == pytest.approx(3 * math.log(2), rel=1e-6)
    # dec with gamma = 0: -log D(Dec(Enc(x))) - log D(Dec(z)) = 2 log 2
    dec = _vae_gan_with_constant_logits(gamma=0.0).training_losses(x, "dec")
    assert dec["loss"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert dec["gan"].item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_the_diffusion_fid_curve_samples_with_ddim_and_the_others_with_their_default() -> None:
    ddpm = family("ddpm")
    curve = ddpm.train().curve_sampling(ddpm.sampling())
    assert (curve.sampler, curve.sample_steps, curve.eta) == ("ddim", 100, 0.0)
    assert ddpm.sampling().sampler == "ddpm"  # the final numbers keep the ancestral sampler
    assert ddpm.train(fid_ddim_steps=0).curve_sampling(ddpm.sampling()) == ddpm.sampling()
    for name in ("vae", "dcgan"):
        assert family(name).train().curve_sampling(family(name).sampling()) == family(name).sampling()
