"""Exponential moving average of a model's sampled-from weights (Polyak averaging), kept by the trainer.

Averaged generator weights give visibly smoother samples than the last iterate for every family; the model
says which parameters matter (`GenerativeModel.ema_parameters`: a GAN's generator, not its critic).

BatchNorm's running statistics are not parameters: collected while the *raw* weights trained, they do not
describe the activations of the averaged weights, and sampling in eval mode with that mismatch costs a
DCGAN a visible share of its FID (docs/benchmarks.md). `averaged` therefore recomputes them for the averaged
network on prior samples (the procedure of SWA, Izmailov et al. 2018, `torch.optim.swa_utils.update_bn`), and
the trainer stores them with the averaged weights; the raw weights keep their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from genbench.models.base import GenerativeModel

BN_BATCHES = 100  # batches of prior z over which the averaged network's BatchNorm statistics are averaged


class EMA:
    """shadow ← d·shadow + (1-d)·param after every step, with d = min(decay, (1 + n) / (10 + n)) at update n.

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps a short run's average
    from being dominated by the random initialisation; decay 0 makes the shadow the weights themselves.
    """

    def __init__(self, params: dict[str, nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().clone() for name, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, nn.Parameter]) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in params.items():
            if decay == 0.0:
                self.shadow[name].copy_(p)
            else:
                self.shadow[name].lerp_(p.detach(), 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"updates": self.updates, **{f"shadow.{k}": v for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        self.updates = int(state["updates"])
        for name in self.shadow:
            self.shadow[name].copy_(state[f"shadow.{name}"])

    @contextmanager
    def swapped_in(self, params: dict[str, nn.Parameter]) -> Iterator[None]:
        """The averaged weights inside the block (to measure what will be sampled), the live ones after."""
        live = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(live[name])


@contextmanager
def averaged(model: GenerativeModel, ema: EMA, seed: int, batch_size: int) -> Iterator[dict[str, Tensor]]:
    """`model` with the averaged weights and, if it samples through BatchNorm (`prior_network`), running
    statistics recomputed for them: reset, then the plain average over BN_BATCHES batches of z ~ N(0, I)
    drawn from `seed` (train mode, no grad). Yields those statistics by state-dict name, to be stored with the
    averaged weights; the raw weights and statistics are back after the block. The z come from their own
    generator, so measuring never moves the training's random stream."""
    prior = model.prior_network()
    network, latent_dim = prior if prior is not None else (None, 0)
    owned = {id(b) for b in network.buffers()} if network is not None else set()
    statistics = {name: b for name, b in model.named_buffers() if id(b) in owned}
    raw = {name: b.clone() for name, b in statistics.items()}
    with ema.swapped_in(model.ema_parameters()):
        if network is not None:
            device = next(network.parameters()).device
            z = torch.Generator().manual_seed(seed)
            batches = (torch.randn(batch_size, latent_dim, generator=z).to(device) for _ in range(BN_BATCHES))
            with torch.no_grad():
                update_bn(batches, network)
        try:
            yield {name: b.clone() for name, b in statistics.items()}
        finally:
            with torch.no_grad():
                for name, b in statistics.items():
                    b.copy_(raw[name])
