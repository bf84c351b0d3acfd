"""torch's Adam and RMSprop without the compiler import that torch.optim makes on their first use.

torch.optim wraps `Optimizer.add_param_group`, `zero_grad`, `state_dict` and `load_state_dict` in
`torch._disable_dynamo`, and each optimizer's `step` in `_use_grad_for_differentiable` (grad mode set, then a
graph break for the compiler). Both import `torch._dynamo`, sympy with it, when first called: in a fresh process
that import takes longer than a tiny training run, and every `genbench train` is a fresh process (each DVC stage,
Prefect or Kubeflow task, each fault test's child). The wrappers only fence the optimizer off from
`torch.compile`, which training never uses (`genbench bench --compile` compiles the forward and the loss, and steps
outside them). The classes here run torch's own methods unwrapped, the step under the grad mode the wrapper sets,
so the updates are the same; under torchrun DistributedDataParallel imports the compiler anyway.
tests/unit/test_optimizers.py checks that stepping, saving and loading them in a fresh process leaves
`torch._dynamo` unimported, so a torch upgrade that wraps another of their methods shows up there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer


def _eager_step(optimizer: type[Optimizer]) -> Callable[..., Any]:
    """`optimizer.step` as written, in the grad mode `_use_grad_for_differentiable` gives it."""
    step = inspect.unwrap(optimizer.step)  # through torch's wrapper and its profiling hook, once patched

    def eager_step(self: Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return step(self, closure)

    return eager_step


class _Eager:
    """Optimizer's methods that torch wraps in `torch._disable_dynamo`, as written (mixed in before the optimizer)."""

    add_param_group = inspect.unwrap(Optimizer.add_param_group)
    zero_grad = inspect.unwrap(Optimizer.zero_grad)
    state_dict = inspect.unwrap(Optimizer.state_dict)
    load_state_dict = inspect.unwrap(Optimizer.load_state_dict)


class Adam(_Eager, torch.optim.Adam):
    step = _eager_step(torch.optim.Adam)


class RMSprop(_Eager, torch.optim.RMSprop):
    step = _eager_step(torch.optim.RMSprop)
