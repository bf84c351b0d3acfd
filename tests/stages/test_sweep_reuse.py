"""Sweeps of one entry overlap (an NFE sweep's DDIM line is a DDIM-steps sweep): a set drawn again byte for byte
is scored from its cached features, to the same numbers, without another pass through the network."""

from __future__ import annotations

import json
from pathlib import Path

from genbench.components.sweep.sweep import sweep
from genbench.config import load_config
from genbench.layout import Layout


def test_a_set_drawn_again_by_another_sweep_reuses_its_features(trained: Path, pixel_network: list[int]) -> None:
    config = load_config(trained / "params.yaml")
    here = Layout(trained)
    name, settings = next(iter(config.sweeps.items()))

    def run(as_name: str) -> dict:
        record = sweep(as_name, settings, here.run(settings.entry, config.seeds[0]),
                       config.sampling_for(settings.entry), config.sample, config.seed, here.reference,
                       here.sweep(as_name), here.sweep_summary(as_name), cache_dir=here.cache,
                       evaluate_settings=config.evaluate, data=config.data, download_dir=here.downloads)
        return record.model_dump(mode="json")

    first = run(name)
    n = settings.n or config.sample.n
    assert n in pixel_network  # the first sweep's sets went through the network
    seen = len(pixel_network)
    again = run(f"{name}-again")
    assert n not in pixel_network[seen:]  # the same bytes: the features came from the cache
    assert [row["samples_md5"] for row in again["rows"]] == [row["samples_md5"] for row in first["rows"]]
    assert [row["fid"] for row in again["rows"]] == [row["fid"] for row in first["rows"]]
    stems = sorted(path.name for path in here.sweep(name).glob("*.metrics.json"))
    for stem in stems:
        ours, theirs = (json.loads((here.sweep(s) / stem).read_text()) for s in (name, f"{name}-again"))
        assert ours["fid_ci95"] == theirs["fid_ci95"] and ours["precision"] == theirs["precision"]
    assert list(here.cache.glob("features-*.npz"))
