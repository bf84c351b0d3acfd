"""The averaged weights sample with BatchNorm statistics of their own activations, not the raw weights'."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genbench.components.train.ema import EMA, averaged
from genbench.models import build_model, family

# Means within 0.05 standard deviations and variances within 5 % of the activations' own statistics on 8192
# fresh z: the recomputation averages 100 batches of 64 (sampling error of a mean ~0.013 std) and, in train
# mode, normalises each layer's input by its batch's statistics rather than the large batch's. Measured here:
# variances within 1.6 %; against the raw weights' statistics the variances differ by ~100 %.
MEAN_TOL, VAR_RTOL = 0.05, 0.05


def _batchnorms(network: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]


def _activation_statistics(network: nn.Module, z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer, the mean and unbiased variance of its input on the batch z (train mode)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [bn.register_forward_pre_hook(lambda _, args: seen.append(
        (args[0].mean((0, 2, 3)), args[0].transpose(0, 1).flatten(1).var(1, unbiased=True))))
        for bn in _batchnorms(network)]
    network.train()
    with torch.no_grad():
        network(z)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("name", ["dcgan", "vae_gan"])
def test_averaged_batchnorm_statistics_are_those_of_the_averaged_weights(name: str) -> None:
    torch.manual_seed(0)
    arch = family(name).arch(latent_dim=8, base_channels=8)
    model = build_model(name, 1, 28, arch)
    network, latent_dim = model.prior_network()
    ema = EMA(model.ema_parameters(), decay=0.9)
    with torch.no_grad():  # the raw weights move away from the average, and collect statistics of their own
        for p in network.parameters():
            p.add_(0.3 * torch.randn_like(p))
        network.train()
        for _ in range(20):
            network(torch.randn(64, latent_dim))
    raw = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _batchnorms(network)]
    raw_weights = {k: v.clone() for k, v in model.ema_parameters().items()}

    with averaged(model, ema, seed=0, batch_size=64) as statistics:
        stored = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _batchnorms(network)]
        own = _activation_statistics(network, torch.randn(8192, latent_dim, generator=torch.Generator().manual_seed(1)))
    assert len(stored) == len(own) == 2
    assert len(statistics) == 3 * len(stored)  # running_mean, running_var, num_batches_tracked per layer
    for (mean, var), (own_mean, own_var), (raw_mean, raw_var) in zip(stored, own, raw, strict=True):
        assert ((mean - own_mean).abs() <= MEAN_TOL * own_var.sqrt()).all()
        torch.testing.assert_close(var, own_var, atol=0, rtol=VAR_RTOL)
        # ... and they are not the raw weights' statistics
        assert ((var - raw_var).abs() / raw_var).max() > 10 * VAR_RTOL
    # after the block the raw weights and their statistics are back
    for (mean, var), bn in zip(raw, _batchnorms(network), strict=True):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    for k, v in model.ema_parameters().items():
        assert torch.equal(v, raw_weights[k])


def test_averaged_leaves_a_model_without_batchnorm_and_the_global_random_stream_alone() -> None:
    torch.manual_seed(0)
    model = build_model("vae", 1, 28, family("vae").arch(latent_dim=4, base_channels=8))
    ema = EMA(model.ema_parameters(), decay=0.9)
    state = torch.get_rng_state()
    with averaged(model, ema, seed=0, batch_size=8) as statistics:
        assert statistics == {}
    assert torch.equal(torch.get_rng_state(), state)
