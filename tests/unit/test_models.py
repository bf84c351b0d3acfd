"""Model families: shapes and ranges, learning on a tiny batch, seeded sampling, and schedule math.

Schedule expectations are recomputed here from the papers' formulas in float64 with `math`, never read back
from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from genbench.components.train.ema import EMA
from genbench.models import REGISTRY, build_model
from genbench.models.base import GenerativeModel
from genbench.models.dcgan import DCGAN
from genbench.models.ddpm import DDPM
from genbench.models.diffusion import DiffusionModel, noise_predictor
from genbench.models.ldm import LDM
from genbench.models.samplers import ancestral, ddim, ddim_sample, ddim_step, ddim_timesteps, ddpm_sample
from genbench.models.schedules import make_schedule
from genbench.models.unet import UNet
from genbench.models.vae import VAE, interpolate

# Tiny architectures per family: seconds on a CPU.
TINY: dict[str, dict] = {
    "vae": {"base_channels": 8, "latent_dim": 4},
    "dcgan": {"base_channels": 8, "latent_dim": 8},
    "wgan_gp": {"base_channels": 8, "latent_dim": 8, "n_critic": 2},
    "wgan": {"base_channels": 8, "latent_dim": 8, "n_critic": 2},
    "vae_gan": {"base_channels": 8, "latent_dim": 8},
    "ddpm": {"base_channels": 8, "channel_mults": (1, 2), "timesteps": 10, "num_res_blocks": 1, "dropout": 0.0,
             "attention_resolutions": ()},
    "ldm": {"hidden_dim": 32, "num_layers": 3, "timesteps": 10},
}
GROUPS = {"dcgan": ["d", "g"], "wgan_gp": ["d", "g"], "wgan": ["d", "g"], "vae_gan": ["d", "enc", "dec"]}


def tiny(family: str, channels: int = 1, image_size: int = 28, **overrides) -> GenerativeModel:
    """A tiny untrained model; the ldm gets a tiny untrained vae of the same image shape to freeze."""
    frozen = {"vae": tiny("vae", channels, image_size)} if family == "ldm" else {}
    torch.manual_seed(0)
    return build_model(family, channels, image_size, TINY[family] | overrides, **frozen)


def toy_batch(n: int = 16, channels: int = 1, size: int = 28) -> torch.Tensor:
    """Bright rectangles of varied size on a dark background, in [-1, 1]: structure a model can learn."""
    g = torch.Generator().manual_seed(7)
    x = -torch.ones(n, channels, size, size)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        x[i, :, top : top + h, left : left + w] = 1.0
    return x


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_registry_lists_every_family_and_rejects_unknown_names() -> None:
    assert set(REGISTRY) == {"vae", "dcgan", "wgan_gp", "wgan", "vae_gan", "ddpm", "ldm"}
    with pytest.raises(ValueError, match=r"'gan'.*dcgan.*ddpm.*vae"):
        build_model("gan", channels=1, image_size=28)
    with pytest.raises(ValueError, match="trained vae"):
        build_model("ldm", channels=1, image_size=28)  # a family built on a trained model must be given it


def test_guidance_needs_a_conditional_model() -> None:
    with pytest.raises(ValueError, match="class-conditional"):
        ddim(tiny("ddpm"), generators([0]), sample_steps=2, guidance_scale=3.0)


@pytest.mark.parametrize("family", sorted(REGISTRY))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_losses_and_samples_have_the_right_shapes_and_range(family: str, channels: int, size: int) -> None:
    model = tiny(family, channels, size)
    x = toy_batch(4, channels, size)
    groups = list(model.parameter_groups())
    assert groups == GROUPS.get(family, ["model"])
    for group in groups:
        losses = model.training_losses(x, group)
        assert losses["loss"].shape == () and losses["loss"].requires_grad and torch.isfinite(losses["loss"])
        for name, value in losses.items():
            if name != "loss":
                assert value.shape == () and not value.requires_grad, name
    images = model.sample(generators([0, 1, 2]))
    assert images.shape == (3, channels, size, size)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 0  # not a constant image


# the UNet's steps cost the most, and 20 of them already bring its loss far below the threshold
@pytest.mark.parametrize(("family", "threshold", "steps"), [("vae", 0.6, 50), ("ddpm", 0.5, 20), ("ldm", 0.6, 50)])
def test_single_group_families_drive_their_loss_down(family: str, threshold: float, steps: int) -> None:
    model, x = tiny(family), toy_batch()
    before = fixed_noise_loss(model, x, "model")
    train(model, x, "model", steps=steps, lr=3e-3)
    after = fixed_noise_loss(model, x, "model")
    assert after < threshold * before, (before, after)


def test_dcgan_discriminator_and_generator_each_learn_against_a_frozen_opponent() -> None:
    model, x = tiny("dcgan"), toy_batch()
    before = fixed_noise_loss(model, x, "d")
    train(model, x, "d", steps=40, lr=2e-3)  # only D's optimizer steps: G is frozen
    after = fixed_noise_loss(model, x, "d")
    assert after < 0.4 * before, (before, after)

    before_g = fixed_noise_loss(model, x, "g")
    train(model, x, "g", steps=40, lr=2e-3)  # now D is frozen
    after_g = fixed_noise_loss(model, x, "g")
    assert after_g < 0.5 * before_g, (before_g, after_g)


@pytest.mark.parametrize(("family", "factor", "overrides"), [
    ("wgan_gp", None, {}),
    ("wgan", None, {"clip": 0.1}),  # at the paper's 0.01 the scores barely move in 20 steps
    ("vae_gan", 0.5, {}),
])
def test_adversarial_families_learn_each_group_against_frozen_opponents(
    family: str, factor: float | None, overrides: dict
) -> None:
    """Each group, trained alone in the trainer's order, lowers its own loss on a fixed batch (Wasserstein
    losses are unbounded below, so for them "lower by a clear margin" rather than "by a factor")."""
    model, x = tiny(family, **overrides), toy_batch(8)
    for group in GROUPS[family]:
        before = fixed_noise_loss(model, x, group)
        train(model, x, group, steps=20, lr=2e-3)
        after = fixed_noise_loss(model, x, group)
        if factor is None:
            assert after < before - 0.05 * abs(before), (group, before, after)
        elif group == "enc":  # the decoder is frozen: the encoder can only move the posterior a little
            assert after < 0.995 * before, (group, before, after)
        else:
            assert after < factor * before, (group, before, after)


def test_wgan_clips_its_critic_and_wgan_gp_penalises_it() -> None:
    clipped, penalised = tiny("wgan", clip=0.05), tiny("wgan_gp")
    train(clipped, toy_batch(), "d", steps=3, lr=1e-1)
    assert max(float(p.detach().abs().max()) for p in clipped.d.parameters()) == pytest.approx(0.05)
    assert clipped.updates_per_step() == {"d": 2, "g": 1}
    assert "gradient_penalty" in penalised.training_losses(toy_batch(4), "d")


def fixed_noise_loss(model: GenerativeModel, x: torch.Tensor, group: str) -> float:
    """The loss under one fixed draw of the model's internal noise, so before/after compare like with like."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return float(model.training_losses(x, group)["loss"].detach())


def train(model: GenerativeModel, x: torch.Tensor, group: str, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(model.parameter_groups()[group], lr=lr)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = model.training_losses(x, group)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.after_update(group)


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_sample_depends_only_on_each_images_own_seed(family: str) -> None:
    model = tiny(family)
    model.train()  # DCGAN must switch its generator to eval itself, so batch statistics cannot leak in
    rng_before = torch.get_rng_state()
    batch = model.sample(generators([11, 12, 13, 14]))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global generator is never touched
    assert torch.equal(model.sample(generators([11, 12, 13, 14])), batch)
    alone = model.sample(generators([13]))
    torch.testing.assert_close(alone[0], batch[2], rtol=0, atol=1e-5)
    reordered = model.sample(generators([14, 13]))
    torch.testing.assert_close(reordered[1], batch[2], rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])  # different seeds, different images
    assert model.training  # sample() leaves the mode as it found it


def test_dcgan_sample_restores_eval_mode_too() -> None:
    model = tiny("dcgan")
    assert isinstance(model, DCGAN)
    model.eval()
    model.sample(generators([0]))
    assert not model.training and not model.g.training


def test_linear_schedule_matches_ho_et_al() -> None:
    T = 1000
    schedule = make_schedule("linear", T)
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    for t in (0, 1, 99, 500, 999):
        expected = math.prod(1.0 - b for b in betas[: t + 1])
        assert float(schedule.alphas_cumprod[t]) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert float(schedule.alphas_cumprod[999]) == pytest.approx(4.036e-5, rel=1e-3)  # the value DDPM ends at


def test_linear_schedule_rescales_for_other_lengths() -> None:
    schedule = make_schedule("linear", 200)
    assert schedule.betas.dtype == torch.float64 and len(schedule.betas) == 200
    assert float(schedule.betas[0]) == pytest.approx(5e-4, rel=1e-12)
    assert float(schedule.betas[-1]) == pytest.approx(0.1, rel=1e-12)
    betas = [5e-4 + (0.1 - 5e-4) * i / 199 for i in range(200)]
    assert float(schedule.alphas_cumprod[50]) == pytest.approx(math.prod(1 - b for b in betas[:51]), rel=1e-12)
    assert float(make_schedule("linear", 4).betas.max()) == 0.999  # tiny T: clipped, still a valid schedule


def test_cosine_schedule_matches_nichol_and_dhariwal() -> None:
    T, s = 1000, 0.008

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    schedule = make_schedule("cosine", T)
    for t in (0, 10, 250, 500, 900):  # index t is step t+1: abar = f(t+1) / f(0), exactly, while unclipped
        assert float(schedule.alphas_cumprod[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    assert float(schedule.betas.max()) == 0.999  # clipped at the very end, where f(T) = 0
    assert float(schedule.betas[-1]) == 0.999


def test_unknown_schedule_is_rejected() -> None:
    with pytest.raises(ValueError, match="quadratic"):
        make_schedule("quadratic", 10)


def test_q_sample_has_the_closed_form_mean_and_variance() -> None:
    schedule = make_schedule("linear", 1000)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    t = 300
    abar = math.prod(1.0 - b for b in betas[: t + 1])
    x0 = torch.full((1, 1, 2, 2), 0.7, dtype=torch.float64)
    noise = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64).reshape(1, 1, 2, 2)
    xt = schedule.q_sample(x0, torch.tensor([t]), noise)
    torch.testing.assert_close(xt, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise, rtol=1e-12, atol=0)

    # And as a distribution: many draws at one pixel have mean sqrt(abar) x0 and variance 1 - abar.
    g = torch.Generator().manual_seed(0)
    n = 200_000
    draws = schedule.q_sample(torch.full((n, 1), 0.7, dtype=torch.float64), torch.full((n,), t),
                              torch.randn(n, 1, generator=g, dtype=torch.float64))
    assert float(draws.mean()) == pytest.approx(math.sqrt(abar) * 0.7, abs=4 * math.sqrt((1 - abar) / n))
    assert float(draws.var()) == pytest.approx(1 - abar, rel=0.01)


def test_posterior_matches_ho_et_al_eq_6_and_7() -> None:
    T = 1000
    schedule = make_schedule("linear", T)
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    x0 = torch.tensor([[0.5], [-0.25], [0.9]], dtype=torch.float64)
    xt = torch.tensor([[0.1], [1.3], [-0.8]], dtype=torch.float64)
    ts = [1, 400, 999]
    mean, variance = schedule.posterior_mean_variance(x0, xt, torch.tensor(ts))
    for row, t in enumerate(ts):
        beta, alpha = betas[t], 1.0 - betas[t]
        abar, abar_prev = math.prod(1 - b for b in betas[: t + 1]), math.prod(1 - b for b in betas[:t])
        expected_var = (1 - abar_prev) / (1 - abar) * beta
        expected_mean = (math.sqrt(abar_prev) * beta / (1 - abar) * float(x0[row])
                         + math.sqrt(alpha) * (1 - abar_prev) / (1 - abar) * float(xt[row]))
        assert float(variance[row]) == pytest.approx(expected_var, rel=1e-10)
        assert float(mean[row]) == pytest.approx(expected_mean, rel=1e-10)
        # The same answer by Bayes' rule: prior N(sqrt(abar_prev) x0, 1-abar_prev), likelihood N(sqrt(alpha) x, beta).
        precision = 1 / (1 - abar_prev) + alpha / beta
        bayes_mean = (math.sqrt(abar_prev) * float(x0[row]) / (1 - abar_prev)
                      + math.sqrt(alpha) * float(xt[row]) / beta) / precision
        assert float(variance[row]) == pytest.approx(1 / precision, rel=1e-10)
        assert float(mean[row]) == pytest.approx(bayes_mean, rel=1e-10)


def test_posterior_at_the_first_step_returns_x0_without_noise() -> None:
    schedule = make_schedule("cosine", 50)
    x0 = torch.tensor([[0.3, -0.6]])
    xt = torch.tensor([[2.0, 1.0]])
    mean, variance = schedule.posterior_mean_variance(x0, xt, torch.tensor([0]))
    torch.testing.assert_close(mean, x0)
    assert float(variance) == 0.0


def test_interpolation_runs_between_the_two_reconstructions() -> None:
    vae = tiny("vae")
    assert isinstance(vae, VAE)
    a, b = toy_batch(2)
    path = interpolate(vae, a, b, steps=5)
    assert path.shape == (5, 1, 28, 28) and path.min() >= -1 and path.max() <= 1
    with torch.no_grad():
        ends = vae.decode(vae.encode(torch.stack([a, b]))[0])
    torch.testing.assert_close(path[[0, -1]], ends)


def test_v_parametrisation_round_trips_in_closed_form() -> None:
    schedule = make_schedule("cosine", 100)
    t = torch.tensor([0, 37, 99])
    x0 = torch.tensor([0.5, -0.3, 0.9], dtype=torch.float64).reshape(3, 1)
    eps = torch.tensor([1.2, 0.4, -0.7], dtype=torch.float64).reshape(3, 1)
    abar = schedule.alphas_cumprod[t].reshape(3, 1)
    v = schedule.v_target(x0, t, eps)
    torch.testing.assert_close(v, abar.sqrt() * eps - (1 - abar).sqrt() * x0, rtol=1e-12, atol=0)
    xt = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.eps_from_v(xt, t, v), eps, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(schedule.predict_x0(xt, t, eps), x0, rtol=1e-9, atol=1e-12)


def test_ddim_timesteps_spread_evenly_and_cover_all_t_when_equal() -> None:
    assert ddim_timesteps(10, 10) == list(range(10))
    assert ddim_timesteps(1000, 5) == [0, 250, 500, 749, 999]
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


def test_ddim_step_with_eta_1_is_the_ddpm_posterior() -> None:
    """sigma^2 = posterior variance and, with ε consistent with x0, the mean is Ho et al.'s eq. 7."""
    schedule = make_schedule("linear", 1000)
    x0 = torch.tensor([[0.5], [-0.25]], dtype=torch.float64)
    xt = torch.tensor([[0.1], [1.3]], dtype=torch.float64)
    for t in (1, 400, 999):
        tt = torch.full((2,), t)
        eps = schedule.predict_eps(xt, tt, x0)
        mean, variance = schedule.posterior_mean_variance(x0, xt, tt)
        step = ddim_step(schedule, xt, t, t - 1, eps, eta=1.0, noise=torch.zeros_like(xt), clip=False)
        torch.testing.assert_close(step, mean, rtol=1e-10, atol=1e-12)
        unit = ddim_step(schedule, xt, t, t - 1, eps, eta=1.0, noise=torch.ones_like(xt), clip=False) - step
        torch.testing.assert_close(unit, variance.sqrt(), rtol=1e-10, atol=1e-12)


def test_ddim_with_eta_0_is_deterministic_and_matches_the_closed_form() -> None:
    """With ε ≡ 0 every DDIM step rescales by sqrt(abar_prev / abar_t), so x_0 = x_T / sqrt(abar_{T-1}), and no
    randomness is drawn after x_T."""
    schedule = make_schedule("linear", 20)
    gens = generators([5, 6])
    out = ddim_sample(lambda x, t: torch.zeros_like(x), schedule, (1, 2, 2), gens, sample_steps=7, eta=0.0,
                      clip=False)
    fresh = generators([5, 6])
    x_T = torch.stack([torch.randn(1, 2, 2, generator=g) for g in fresh])
    torch.testing.assert_close(out, x_T / float(schedule.alphas_cumprod[-1]) ** 0.5, rtol=1e-6, atol=1e-6)
    assert all(torch.equal(g.get_state(), f.get_state()) for g, f in zip(gens, fresh))


def wake(net: torch.nn.Module) -> None:
    """Give the zero-initialised layers weights, so ε and the class embedding reach the output untrained."""
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.1)


def test_ddim_with_eta_1_over_all_steps_equals_the_ddpm_sampler() -> None:
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2)).eval()
    wake(net)
    schedule = make_schedule("cosine", 6)
    eps_fn = noise_predictor(net, schedule, "eps")
    with torch.no_grad():
        ddpm = ddpm_sample(eps_fn, schedule, (1, 8, 8), generators([1, 2]), variance_type="fixed_small")
        ddim = ddim_sample(eps_fn, schedule, (1, 8, 8), generators([1, 2]), sample_steps=6, eta=1.0)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_guidance_0_is_the_unconditional_branch(prediction: str) -> None:
    model = tiny("ddpm", num_classes=3, prediction=prediction)
    wake(model.net)
    x, t, labels = toy_batch(2), torch.tensor([3, 7]), torch.tensor([0, 2])
    with torch.no_grad():
        guided = noise_predictor(model.net, model.schedule, prediction, labels, guidance_scale=0.0)(x, t)
        unconditional = noise_predictor(model.net, model.schedule, prediction, torch.full_like(labels, 3))(x, t)
        conditional = noise_predictor(model.net, model.schedule, prediction, labels)(x, t)
    assert torch.equal(guided, unconditional)  # s = 0 runs the unconditional branch alone, nothing mixed in
    assert not torch.allclose(conditional, unconditional)  # the class embedding does matter
    a = ddim(model, generators([3, 4]), torch.tensor([0, 1]), sample_steps=4, guidance_scale=0.0)
    b = ddim(model, generators([3, 4]), torch.tensor([2, 2]), sample_steps=4, guidance_scale=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_null_label_is_the_networks_own_and_a_wrong_call_fails() -> None:
    """"No class" is the network's row num_classes, never a number a caller passes (0 would be a real class)."""
    model = tiny("ddpm", num_classes=3)
    labels = torch.tensor([0, 2])
    with pytest.raises(TypeError):
        noise_predictor(model.net, model.schedule, "eps", labels, 0, 0.0)  # type: ignore[misc]
    unconditional = tiny("ddpm")
    with pytest.raises(ValueError, match="class-conditional network"):
        noise_predictor(unconditional.net, unconditional.schedule, "eps", labels)


def test_ddpm_and_ldm_share_one_diffusion_path() -> None:
    for method in ("training_losses", "noise_predictor", "sample"):
        assert getattr(DDPM, method) is getattr(LDM, method) is getattr(DiffusionModel, method), method


def test_conditional_ddpm_needs_labels_and_samples_per_seed() -> None:
    model = tiny("ddpm", num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        model.training_losses(toy_batch(2), "model")
    with pytest.raises(ValueError, match="labels"):
        ancestral(model, generators([1]))
    loss = model.training_losses(toy_batch(2), "model", torch.tensor([0, 1]))["loss"]
    assert torch.isfinite(loss) and loss.requires_grad
    batch = ancestral(model, generators([1, 2, 3]), torch.tensor([0, 1, 2]), guidance_scale=2.0)
    alone = ancestral(model, generators([2]), torch.tensor([1]), guidance_scale=2.0)
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-5)


def test_ema_follows_the_closed_form_with_warm_up() -> None:
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA({"p": p}, decay=0.9)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        p.data.fill_(value)
        ema.update({"p": p})
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert float(ema.shadow["p"]) == pytest.approx(expected, rel=1e-6)
    restored = EMA({"p": p}, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 4 and torch.equal(restored.shadow["p"], ema.shadow["p"])


def test_gans_average_only_their_generator() -> None:
    for family, prefix in (("dcgan", "g."), ("wgan_gp", "g."), ("vae_gan", "dec.")):
        names = tiny(family).ema_parameters()
        assert names and all(n.startswith(prefix) for n in names), family
    ldm = tiny("ldm")
    assert all(n.startswith("net.") for n in ldm.ema_parameters())
    assert not any(p.requires_grad for p in ldm.vae.parameters())


def test_fp16_scaler_skips_an_overflowing_step_and_its_state_survives_a_checkpoint() -> None:
    from genbench.components.common.dtypes import MixedPrecision

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    precision = MixedPrecision("fp16", torch.device("cpu"), {"model": optimizer})
    precision.backward_and_step("model", (weight * float("inf")).sum(), optimizer)
    assert torch.equal(weight.detach(), torch.ones(3))  # the step with inf gradients was skipped
    assert precision.state_dict()["model"]["scale"] == 2.0**16 / 2  # and the scale backed off
    optimizer.zero_grad()
    precision.backward_and_step("model", weight.sum(), optimizer)
    assert torch.allclose(weight.detach(), torch.full((3,), 0.9))  # unscaled before the step

    restored = MixedPrecision("fp16", torch.device("cpu"), {"model": optimizer})
    restored.load_state_dict(precision.state_dict())
    assert restored.state_dict() == precision.state_dict()
    assert MixedPrecision("fp32", torch.device("cpu"), {"model": optimizer}).state_dict() == {"model": {}}
