"""The train stage's optimizers (components/train/optimizers.py): torch's updates, bit for bit, without importing
torch._dynamo, which a fresh `genbench train` process would otherwise spend longer importing than training."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from genbench.components.train import optimizers
from genbench.components.train.train import make_optimizer
from genbench.models.config import TrainConfig

# A fresh interpreter: the test process has imported torch._dynamo long before (any torch.optim optimizer does).
FRESH_PROCESS = """
import sys
import torch
from genbench.components.train.optimizers import Adam, RMSprop

for optimizer_class in (Adam, RMSprop):
    model = torch.nn.Linear(3, 2)
    optimizer = optimizer_class(model.parameters())
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        model(torch.ones(4, 3)).sum().backward()
        optimizer.step()
    optimizer.load_state_dict(optimizer.state_dict())
print(sorted(name for name in sys.modules if name.startswith("torch._dynamo")))
"""


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _train(optimizer_class: type[torch.optim.Optimizer], **options: object) -> dict[str, torch.Tensor]:
    """Weights after three steps of `optimizer_class`, the state saved and loaded into a new one after the second."""
    model = _model()
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    optimizer = optimizer_class(model.parameters(), **options)
    for step in range(3):
        if step == 2:
            state = optimizer.state_dict()
            optimizer = optimizer_class(model.parameters(), **options)
            optimizer.load_state_dict(state)
        optimizer.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize(("eager", "torch_class", "options"), [
    (optimizers.Adam, torch.optim.Adam, {"lr": 1e-2, "betas": (0.5, 0.999)}),
    (optimizers.RMSprop, torch.optim.RMSprop, {"lr": 1e-2}),
])  # fmt: skip
def test_the_updates_are_torchs_bit_for_bit(
    eager: type[torch.optim.Optimizer], torch_class: type[torch.optim.Optimizer], options: dict[str, object]
) -> None:
    ours, theirs, initial = _train(eager, **options), _train(torch_class, **options), _model().state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]) and not torch.equal(value, initial[key]), key


def test_make_optimizer_gives_them_and_the_step_keeps_hooks() -> None:
    model = torch.nn.Linear(2, 1)
    assert type(make_optimizer(TrainConfig(optimizer="rmsprop"), model.parameters())) is optimizers.RMSprop
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    assert type(optimizer) is optimizers.Adam
    seen: list[str] = []
    optimizer.register_step_pre_hook(lambda *_: seen.append("pre"))
    optimizer.register_step_post_hook(lambda *_: seen.append("post"))
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    assert seen == ["pre", "post"]


def test_a_fresh_process_steps_them_without_importing_the_compiler() -> None:
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
