"""Records read back as the types that wrote them: one written before the entry field was renamed (`name`, as a
registry's config.json keeps it for good) reads into `.entry` and is written back with `entry`; a file that is no
record of its stage names itself and the command that writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbench.components.common.artifacts import read_run_record, read_summary
from genbench.components.common.io import write_json
from genbench.components.common.records import read_metrics, read_register_record, read_sample_record

OLD_RUN = {"name": "ddpm_cfg", "family": "ddpm", "seed": 0, "image": {"channels": 1, "size": 8}, "arch": {},
           "train": {}, "train_data_md5": "a" * 32}
OLD_SUMMARY = {"name": "ddpm_cfg", "family": "ddpm", "steps": 8, "seconds": 1.0, "num_parameters": 10,
               "device": "cpu", "config_sha256": "c" * 64}
OLD_SAMPLE = {"name": "ddpm_cfg", "family": "ddpm", "n": 4, "seed": 0, "batch_size": 4, "shape": [4, 8, 8, 1],
              "device": "cpu", "weights_sha256": "b" * 64, "weights": "ema", "num_classes": 3,
              "network_evaluations": 2, "seconds": 0.5, "sampling": {"family": "ddpm"}, "out": "samples/x.npy",
              "samples_md5": "d" * 32,
              "source": {"model_uri": "models:/genbench-ddpm_cfg@champion", "model_name": "genbench-ddpm_cfg",
                         "version": 3, "run_id": "r1", "fid": 12.5, "tracking_uri": "sqlite:///mlflow.db"}}
OLD_REGISTERED = {"name": "ddpm_cfg", "family": "ddpm", "run_id": "r1", "model_name": "genbench-ddpm_cfg",
                  "version": 3, "fid": 12.5, "champion_version": 3, "promoted": True, "tracking_uri": "sqlite:///x"}


def test_records_written_with_name_read_into_entry(tmp_path: Path) -> None:
    write_json(tmp_path / "config.json", OLD_RUN)
    write_json(tmp_path / "summary.json", OLD_SUMMARY)
    write_json(tmp_path / "sample.json", OLD_SAMPLE)
    write_json(tmp_path / "registry.json", OLD_REGISTERED)
    read = [read_run_record(tmp_path), read_summary(tmp_path), read_sample_record(tmp_path / "sample.json"),
            read_register_record(tmp_path / "registry.json")]
    for record in read:
        dumped = record.model_dump(mode="json")
        assert record.entry == dumped["entry"] == "ddpm_cfg" and "name" not in dumped, type(record).__name__
    sample = read[2]
    assert sample.source is not None and (sample.source.model_name, sample.source.version) == ("genbench-ddpm_cfg", 3)


def test_a_file_that_is_no_record_names_itself_and_its_command(tmp_path: Path) -> None:
    write_json(tmp_path / "metrics.json", {"fid": 3.5, "precision": 0.5})  # from before the record had its fields
    with pytest.raises(ValueError, match=r"metrics\.json: not a metrics record of `genbench evaluate` \(k: Field "
                                         r"required\); run `genbench evaluate` again"):
        read_metrics(tmp_path / "metrics.json")
    with pytest.raises(FileNotFoundError, match=r"registry\.json not found; run `genbench register` first"):
        read_register_record(tmp_path / "registry.json")
