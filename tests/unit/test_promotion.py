"""The promotion policy as a pure function over version tags, and which failures a Prefect task retries."""

from __future__ import annotations

import pytest

from genbench.components.register.promotion import decide, tag_fid
from genbench.flows.retries import is_transient

PROTOCOL = "holdout|fashion_mnist|300|test|300|300|legacy-tf|inception@7ff4a85c3a63|fp32"
SAME = {"data_md5": "d" * 32, "feature_extractor_sha256": "f" * 64, "evaluation_protocol": PROTOCOL}


def tags(fid: float | str, **other: str) -> dict[str, str]:
    return {**SAME, "fid": repr(fid) if isinstance(fid, float) else fid, **other}


@pytest.mark.parametrize(("candidate", "champion", "promote", "reason"), [
    (tags(5.0), None, True, "no champion yet"),
    (tags(5.0), tags(7.0), True, "FID 5.0000 < champion's 7.0000"),
    (tags(7.0), tags(7.0), False, "FID 7.0000 >= champion's 7.0000"),  # a tie never moves the alias
    (tags(9.0), tags(7.0), False, "FID 9.0000 >= champion's 7.0000"),
    (tags(1.0, data_md5="e" * 32), tags(7.0), False, "not comparable"),
    (tags(1.0, feature_extractor_sha256="0" * 64), tags(7.0), False, "not comparable"),
    # FIDs of two protocols (another N, the training split's statistics, a resize mode) are never compared
    (tags(1.0, evaluation_protocol=PROTOCOL.replace("|300|", "|10000|", 1)), tags(7.0), False,
     "not comparable: different evaluation protocol"),
    (tags(1.0, evaluation_protocol=PROTOCOL.replace("legacy-tf", "clean")), tags(7.0), False, "evaluation protocol"),
    (tags(1.0), {k: v for k, v in tags(7.0).items() if k != "evaluation_protocol"}, False, "not recorded"),
    (tags(1.0), tags("n/a"), True, "< champion's inf"),  # an unreadable champion FID never blocks
    (tags("n/a"), tags(7.0), False, ">= champion's"),
])
def test_the_champion_moves_only_to_a_lower_comparable_fid(candidate, champion, promote, reason) -> None:
    decision = decide(candidate, champion)
    assert decision.promote is promote and reason in decision.reason and not decision.forced


def test_force_moves_it_anyway_and_says_so() -> None:
    forced = decide(tags(9.0), tags(7.0), force=True)
    assert forced.promote and forced.forced and forced.reason == "forced (FID 9.0000 >= champion's 7.0000)"
    assert decide(tags(5.0), tags(7.0), force=True).forced is False  # better anyway: nothing was forced
    already = decide(tags(7.0), tags(7.0), same_version=True, force=True)
    assert not already.promote and already.reason == "already champion"


def test_tag_fid_reads_the_recorded_value() -> None:
    assert tag_fid({"fid": "12.5"}) == 12.5 and tag_fid({}) == float("inf")


def test_only_transient_failures_are_retried() -> None:
    from botocore.exceptions import EndpointConnectionError
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from genbench.config import ConfigError

    assert is_transient(ConnectionRefusedError("tracking server down"))
    assert is_transient(TimeoutError())
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:9000"))
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = ConnectionResetError()
    assert is_transient(wrapped)
    for error in (ConfigError("models.vae.train.lr: ..."), FileNotFoundError("runs/vae/config.json"),
                  ValueError("bad images"), MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST),
                  MlflowException("an unclassified error"), RuntimeError("a bug")):
        assert not is_transient(error), error


def test_prefect_retries_a_task_only_for_a_transient_failure() -> None:
    from prefect.states import Failed

    from genbench.flows.retries import retry_transient

    assert retry_transient(None, None, Failed(data=ConnectionRefusedError("tracking server down")))
    assert not retry_transient(None, None, Failed(data=ValueError("models.vae.train.lr: ...")))
    assert not retry_transient(None, None, Failed(data=FileNotFoundError("runs/vae/seed-0/config.json not found")))


def _input_error_raised_while_handling(error: BaseException) -> ValueError:
    """What a stage raises for bad input: its own ValueError naming the file, `from None`, inside the except
    clause that caught the library's error."""
    try:
        raise error
    except type(error):
        try:
            raise ValueError("runs/vae/seed-0/model.safetensors: unreadable weights") from None
        except ValueError as converted:
            return converted


def test_a_stage_input_error_is_not_retried_whatever_it_replaced() -> None:
    from prefect.states import Failed

    from genbench.flows.retries import retry_transient

    for replaced in (OSError("image file is truncated"), ConnectionResetError("peer reset")):
        converted = _input_error_raised_while_handling(replaced)
        assert converted.__context__ is replaced and converted.__suppress_context__
        assert not is_transient(converted)
        assert not retry_transient(None, None, Failed(data=converted))
