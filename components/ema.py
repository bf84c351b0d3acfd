"""Exponential moving average of a model's sampled-from weights (Polyak averaging), kept by the trainer.

Averaged generator weights give visibly smoother samples than the last iterate for every family; the model
says which parameters matter (`GenerativeModel.ema_parameters`: a GAN's generator, not its critic).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


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
