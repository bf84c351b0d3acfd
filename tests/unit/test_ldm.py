"""The latent diffusion model: Rombach et al.'s latent scale (measured by `fit_data`, kept with the weights),
training on posterior samples, and Preechakul et al.'s MLP denoiser with skip connections."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genbench.models import build_model
from genbench.models.ldm import LDM, SkipMLP
from genbench.models.samplers import SAMPLERS
from genbench.models.vae import VAE

from .test_models import generators, toy_batch


def tiny_vae(latent_dim: int = 4) -> VAE:
    torch.manual_seed(0)
    vae = build_model("vae", 1, 28, {"base_channels": 8, "latent_dim": latent_dim})
    assert isinstance(vae, VAE)
    return vae


def tiny_ldm(vae: VAE | None = None, **arch: object) -> LDM:
    vae = vae or tiny_vae()
    torch.manual_seed(0)
    model = build_model("ldm", 1, 28, {"hidden_dim": 32, "num_layers": 3, "timesteps": 10, **arch}, vae=vae)
    assert isinstance(model, LDM)
    return model


def test_the_denoiser_is_an_mlp_with_the_input_fed_to_every_layer() -> None:
    torch.manual_seed(0)
    net = SkipMLP(dim=16, hidden_dim=64, num_layers=4, num_classes=3, dropout=0.1)
    assert [layer.linear.in_features for layer in net.layers] == [16, 64 + 16, 64 + 16, 64 + 16]
    assert [layer.linear.out_features for layer in net.layers] == [64, 64, 64, 16]
    x, t = torch.randn(5, 16), torch.tensor([0, 1, 2, 3, 9])
    out = net.eval()(x, t, torch.tensor([0, 1, 2, 3, 3]))
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="labels"):
        net(x, t)
    # The skip connections: z_t reaches the output through the last layer even with every hidden unit off.
    with torch.no_grad():
        for layer in net.layers[:-1]:
            layer.linear.weight.zero_()
            layer.linear.bias.zero_()
    z = torch.zeros(1, 16)
    z[0, 0] = 1.0
    changed = net(z, t[:1], torch.tensor([0])) - net(torch.zeros(1, 16), t[:1], torch.tensor([0]))
    torch.testing.assert_close(changed[0], net.layers[-1].linear.weight[:, 64])


def test_the_denoiser_drops_out_in_train_mode_only() -> None:
    torch.manual_seed(0)
    net = SkipMLP(dim=8, hidden_dim=32, num_layers=3, dropout=0.5)
    x, t = torch.randn(4, 8), torch.tensor([1, 2, 3, 4])
    net.train()
    assert not torch.allclose(net(x, t), net(x, t))
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


def test_fit_data_sets_the_scale_to_one_over_the_std_of_the_latents_exactly() -> None:
    """With the encoder replaced by a known posterior: means ±1 and ±3 (mean 0, population variance 5) and
    variance 4 everywhere, posterior samples have variance 5 + 4 = 9, so the scale is exactly 1/3, however
    the images are batched."""
    model = tiny_ldm(tiny_vae(latent_dim=2))
    images = torch.zeros(2, 1, 28, 28)
    images[:, 0, 0, :2] = torch.tensor([[1.0, -1.0], [3.0, -3.0]])
    model.vae.encode = lambda x: (x[:, 0, 0, :2], torch.full((len(x), 2), math.log(4.0)))
    assert float(model.latent_scale) == 1.0  # until measured
    model.fit_data(images)
    assert float(model.latent_scale) == pytest.approx(1 / 3, rel=1e-7)
    model.fit_batch_size = 1
    model.latent_scale.fill_(1.0)
    model.fit_data(images)
    assert float(model.latent_scale) == pytest.approx(1 / 3, rel=1e-7)


def test_fit_data_on_a_real_encoder_is_rombachs_one_over_the_std_of_posterior_samples() -> None:
    model, x = tiny_ldm(), toy_batch(8)
    rng = torch.get_rng_state()
    model.fit_data(x)
    assert torch.equal(torch.get_rng_state(), rng)  # no random draws: the training RNG is untouched
    with torch.no_grad():
        mu, logvar = model.vae.encode(x)
    mu, var = mu.double(), logvar.double().exp()
    by_hand = 1 / math.sqrt(float(((mu - mu.mean()) ** 2).mean() + var.mean()))
    assert float(model.latent_scale) == pytest.approx(by_hand, rel=1e-6)
    # Rombach et al.'s estimate, 1 / std of posterior samples, converges to it (20000 draws per image).
    g = torch.Generator().manual_seed(0)
    samples = mu + var.sqrt() * torch.randn((20000, *mu.shape), generator=g, dtype=torch.float64)
    assert float(model.latent_scale) == pytest.approx(1 / float(samples.std()), rel=2e-3)


def test_the_latent_scale_travels_with_the_weights(tmp_path: Path) -> None:
    model = tiny_ldm()
    model.fit_data(toy_batch(8))
    scale = float(model.latent_scale)
    assert scale != 1.0
    assert "latent_scale" in model.state_dict()
    assert "latent_scale" not in dict(model.named_parameters())  # a statistic: no optimizer, no EMA
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    fresh = tiny_ldm()
    assert float(fresh.latent_scale) == 1.0
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert float(fresh.latent_scale) == scale
    # and sampling decodes through it: latents are divided by the scale before the vae decodes them
    z = torch.randn(3, 4)
    torch.testing.assert_close(fresh.decode(z), fresh.vae.decode(z / scale))


def test_training_uses_posterior_samples_of_the_scaled_latents() -> None:
    """The loss under a fixed seed is the hand computation with z = (mu + sigma eps) * scale, drawn in the
    order training draws (eps, then t, then the diffusion noise), and not the one on posterior means."""
    model, x = tiny_ldm(), toy_batch(4)
    model.latent_scale.fill_(0.7)
    torch.manual_seed(3)
    loss = float(model.training_losses(x, "model")["loss"].detach())

    def by_hand(posterior_sample: bool) -> float:
        torch.manual_seed(3)
        with torch.no_grad():
            mu, logvar = model.vae.encode(x)
            eps = torch.randn_like(mu)
            z = (mu + (0.5 * logvar).exp() * eps if posterior_sample else mu) * 0.7
            t = torch.randint(0, 10, (4,))
            noise = torch.randn_like(z)
            abar = model.schedule.alphas_cumprod[t].float()[:, None]
            prediction = model.net(abar.sqrt() * z + (1 - abar).sqrt() * noise, t)
            return float(((prediction - noise) ** 2).mean())

    assert loss == pytest.approx(by_hand(posterior_sample=True), rel=1e-6)
    assert loss != pytest.approx(by_hand(posterior_sample=False), rel=1e-3)


def test_a_conditional_ldm_samples_by_every_diffusion_sampler_with_guidance() -> None:
    model = tiny_ldm(num_classes=3)
    model.fit_data(toy_batch(8))
    loss = model.training_losses(toy_batch(2), "model", torch.tensor([0, 2]))["loss"]
    assert torch.isfinite(loss) and loss.requires_grad
    labels = torch.tensor([0, 1, 2])
    for name, options in [("ddpm", {"variance_type": "fixed_small"}), ("ddpm", {}), ("ddim", {"sample_steps": 4}),
                          ("dpmpp_2m", {"sample_steps": 4}), ("heun", {"sample_steps": 3, "karras_sigmas": True})]:
        images = SAMPLERS[name](model, generators([1, 2, 3]), labels, guidance_scale=2.0, **options)
        assert images.shape == (3, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
        alone = SAMPLERS[name](model, generators([2]), labels[1:2], guidance_scale=2.0, **options)
        torch.testing.assert_close(alone[0], images[1], rtol=0, atol=1e-5)
    assert model.diffusion_shape == (4,) and model.clip is False
