"""The DDP plumbing that needs no second process: batch shares, the BatchNorm twin, and that one process runs the
trainer exactly as before (no wrapper, no reseeding, plain loss values). tests/stages/test_distributed_train.py
runs two."""

from __future__ import annotations

import torch
from torch import nn

from genbench.components.train.distributed import GlobalBatchNorm, Processes, global_batchnorm, processes
from genbench.models import build_model, family


def test_each_rank_takes_its_contiguous_share_and_the_shares_make_the_global_batch() -> None:
    batch = torch.tensor([7, 3, 9, 1, 4, 8])
    shares = [Processes(rank, 3, torch.device("cpu")).shard(batch) for rank in range(3)]
    assert [share.tolist() for share in shares] == [[7, 3], [9, 1], [4, 8]]
    assert Processes(0, 1, torch.device("cpu")).shard(batch).tolist() == batch.tolist()


def test_the_batchnorm_twin_shares_weights_and_statistics_and_leaves_the_model_alone() -> None:
    model = build_model("dcgan", 1, 8, family("dcgan").arch(base_channels=4, latent_dim=8))
    twin = global_batchnorm(model)
    assert twin is not model
    wrapped = [m for m in twin.modules() if isinstance(m, GlobalBatchNorm)]
    originals = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(wrapped) == len(originals) == 4 and [m.norm for m in wrapped] == originals  # dcgan: 2 in g, 2 in d
    assert not any(isinstance(m, GlobalBatchNorm) for m in model.modules())
    assert {id(p) for p in twin.parameters()} == {id(p) for p in model.parameters()}
    assert {id(b) for b in twin.buffers()} == {id(b) for b in model.buffers()}
    ddpm = build_model("ddpm", 1, 8, family("ddpm").arch(base_channels=6, timesteps=4, attention_resolutions=()))
    assert global_batchnorm(ddpm) is ddpm  # no BatchNorm: nothing to twin


def test_one_process_trains_as_before() -> None:
    model = build_model("ddpm", 1, 8, family("ddpm").arch(base_channels=6, timesteps=4, attention_resolutions=()))
    with processes("cpu") as ranks:
        assert (ranks.rank, ranks.world_size, ranks.main, ranks.device) == (0, 1, True, torch.device("cpu"))
        assert ranks.losses(model, 1) == model.training_losses  # the model itself, no DDP wrapper
        before = torch.get_rng_state()
        ranks.seed_draws(0)
        assert torch.equal(torch.get_rng_state(), before)  # the run keeps its one stream
        assert ranks.mean([torch.tensor(0.1), torch.tensor(2.5)]) == [torch.tensor(0.1).item(), 2.5]
        (state,) = ranks.rng_states()
        assert torch.equal(state["torch_rng"], before)
