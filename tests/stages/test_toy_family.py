"""Adding a family is one module and one registry line: the toy of docs/adding-a-family.md, registered at run
time, goes through train → sample → evaluate with nothing else changed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor, nn

from genbench.models import REGISTRY
from genbench.models.base import Family, GenerativeModel, randn_per_sample
from genbench.models.config import PositiveFloat, PositiveInt, Strict, TrainConfig

from .test_stages import invoke


# The module of docs/adding-a-family.md, step 1 (its imports made absolute) ---------------------------------
class PixelGaussianArch(Strict):
    init_log_std: float = 0.0  # starting log standard deviation of every pixel


class PixelGaussianTrain(TrainConfig):
    steps: PositiveInt = 2000
    lr: PositiveFloat = 1e-2


class PixelGaussian(GenerativeModel):
    """x ~ N(mean, diag(exp(log_std))^2), one (mean, log_std) per pixel."""

    def __init__(self, channels: int, image_size: int, arch: PixelGaussianArch) -> None:
        super().__init__(channels, image_size)
        shape = (channels, image_size, image_size)
        self.mean = nn.Parameter(torch.zeros(shape))
        self.log_std = nn.Parameter(torch.full(shape, arch.init_log_std))

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.parameters()}

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        nll = self.log_std + 0.5 * ((x - self.mean) / self.log_std.exp()) ** 2
        return {"loss": nll.mean()}

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        noise = randn_per_sample(self.mean.shape, generators, self.mean.device)
        return (self.mean + self.log_std.exp() * noise).clamp(-1.0, 1.0)


FAMILY = Family(PixelGaussian, PixelGaussianArch, PixelGaussianTrain)
# -----------------------------------------------------------------------------------------------------------


def test_a_registered_toy_family_trains_samples_and_is_evaluated(prepared: Path, pixel_network: list[int],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "pixel_gaussian", FAMILY)  # step 2: the registry line
    # step 3: a tiny override, as for the others
    params = yaml.load(Path("params.yaml").read_text(), Loader=yaml.CSafeLoader)
    params["models"]["pixel_gaussian"] = {"train": {"steps": 30, "batch_size": 32, "log_every": 1,
                                                    "checkpoint_every": 10, "fid_every": 0}}
    Path("params.yaml").write_text(yaml.safe_dump(params))

    assert "pixel_gaussian PixelGaussian 1,568" in " ".join(invoke("models").split())  # 2 × 28 × 28
    invoke("train", "pixel_gaussian")
    history = [line.split(",") for line in
               Path("runs/pixel_gaussian/seed-0/history.csv").read_text().splitlines()[1:]]
    losses = [float(value) for _, name, value in history if name == "model/loss"]
    assert len(losses) == 30 and losses[-1] < losses[0]  # maximum likelihood at work
    invoke("sample", "pixel_gaussian")
    images = np.load("samples/pixel_gaussian/seed-0.npy")
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8 and images.std() > 0
    output = invoke("evaluate", "pixel_gaussian")
    metrics = json.loads(Path("metrics/pixel_gaussian/seed-0.json").read_text())
    assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0 and f"FID {metrics['fid']:.2f}" in output
