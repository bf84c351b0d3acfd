"""The DDP plumbing that needs no second process: batch shares, the BatchNorm twin, that one process runs the
trainer exactly as before (no wrapper, no reseeding, plain loss values, no waiting), and the `distributed` settings:
validated, shown by `genbench params`, and the process group's timeout. tests/stages/test_distributed_train.py
runs two."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from torch import nn
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.train.distributed import GlobalBatchNorm, Processes, global_batchnorm, processes
from genbench.config import ConfigError, DistributedConfig, load_config
from genbench.models import build_model, family

from ..conftest import REPO


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
        ranks.wait_for_main("write")  # nobody to wait for: no group was made, so this would fail if it waited


class Joined(Exception):
    pass


def test_the_process_group_timeout_is_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun `processes` makes the group with `distributed.timeout_seconds` as its timeout (stopped there)."""
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def init_process_group(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs))
        raise Joined

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    with pytest.raises(Joined), processes("cpu", DistributedConfig(timeout_seconds=42)):
        pass
    assert calls == [(("gloo",), {"timeout": timedelta(seconds=42)})]


def write_params(tmp_path: Path, distributed: object) -> Path:
    """The repository's params.yaml with `distributed` set, in tmp_path."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["distributed"] = distributed
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_genbench_params_shows_the_timeouts_and_where_they_came_from(tmp_path: Path) -> None:
    params = write_params(tmp_path, {"timeout_seconds": 600})
    assert load_config(params, "quick").distributed == DistributedConfig(timeout_seconds=600)
    result = CliRunner().invoke(app, ["params", "--params", str(params), "--profile", "quick"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0]: [part.strip() for part in line.split("#")] for line in result.output.splitlines()}
    assert lines["distributed.timeout_seconds"] == ["distributed.timeout_seconds: 600", "params.yaml"]
    default = DistributedConfig().main_wait_seconds
    assert lines["distributed.main_wait_seconds"] == [f"distributed.main_wait_seconds: {default}", "default"]


@pytest.mark.parametrize(("distributed", "field", "hint"), [
    ({"timeout_seconds": 0}, "distributed.timeout_seconds", "greater than 0"),
    ({"main_wait_seconds": 1.5}, "distributed.main_wait_seconds", "integer"),
    ({"timeout_second": 60}, "distributed.timeout_second", "timeout_seconds"),  # the did-you-mean
])  # fmt: skip
def test_a_wrong_timeout_is_named(tmp_path: Path, distributed: dict[str, object], field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_params(tmp_path, distributed), "quick")
    assert f"{field}:" in str(info.value) and hint in str(info.value), str(info.value)
