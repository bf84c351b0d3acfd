"""The promotion policy over version tags (one candidate, and the registry settling after concurrent writers), and
which failures are retried."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from genbench.components.register.promotion import Floor, decide, read_floor, settled_champion, tag_fid
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


def test_retried_http_answers_are_those_that_can_heal() -> None:
    import requests
    from botocore.exceptions import ClientError
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED

    def answered(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(response=response)

    def s3(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    for status in (408, 429, 500, 502, 503, 504):
        assert is_transient(answered(status)), status
    for status in (400, 401, 403, 404, 409, 501):
        assert not is_transient(answered(status)), status
    assert is_transient(s3(503, "SlowDown")) and not is_transient(s3(403, "SignatureDoesNotMatch"))
    assert not is_transient(s3(404, "NoSuchBucket"))
    assert not is_transient(MlflowException("wrong password", error_code=UNAUTHENTICATED))
    assert not is_transient(MlflowException("no access", error_code=PERMISSION_DENIED))
    assert is_transient(RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}))
    assert not is_transient(requests.exceptions.SSLError("certificate verify failed"))  # a ConnectionError subclass
    # a client-side MLflow error (INTERNAL_ERROR, no status) is decided by its context: here a refused connection
    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except requests.exceptions.ConnectionError as refused:
            raise MlflowException(f"API request failed with exception {refused}")
    except MlflowException as wrapped:
        assert is_transient(wrapped)


class Registry:
    """An in-memory model registry with the MlflowClient calls that promotion makes."""

    def __init__(self, fids: list[float | tuple[float, str]]) -> None:
        self.versions: dict[int, SimpleNamespace] = {}
        self.aliases: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        for fid in fids:
            self.add(*(fid if isinstance(fid, tuple) else (fid,)))

    def add(self, fid: float, protocol: str = PROTOCOL) -> int:
        number = len(self.versions) + 1
        self.versions[number] = SimpleNamespace(version=str(number), source="runs:/r/model",
                                                tags=tags(fid, evaluation_protocol=protocol))
        return number

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        return self.versions[int(version)]

    def get_model_version_by_alias(self, name: str, alias: str) -> SimpleNamespace:
        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException(f"no alias {alias}")
        return self.versions[int(self.aliases[alias])]

    def search_model_versions(self, filter_string: str, page_token: str | None = None) -> list:
        page = type("Page", (list,), {"token": None})
        return page(self.versions.values())

    def get_registered_model(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(aliases=dict(self.aliases), tags=dict(self.tags))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.versions[int(version)].tags[key] = value

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.tags[key] = value


def test_a_promotion_that_read_a_stale_champion_settles_on_the_best() -> None:
    """Two registrations read champion v1 (FID 7) at once; v2 (FID 3) got there first. v3 (FID 5), decided against
    the stale read, moves the alias, then settling puts it back on v2."""
    from genbench.components.register.registry import apply_promotion

    store = Registry([7.0, 3.0, 5.0])
    store.aliases["champion"] = "2"
    stale = iter([store.versions[1]])
    fresh = store.get_model_version_by_alias
    store.get_model_version_by_alias = lambda name, alias: next(stale, None) or fresh(name, alias)
    record = apply_promotion(store, "genbench-vae", 3)
    assert store.aliases == {"champion": "2"}
    assert not record.promoted and record.champion_version == 2 and "v2 (FID 3.0000) is champion" in record.reason


def test_settling_never_crosses_protocols_and_keeps_the_champion_on_a_tie() -> None:
    versions = {1: tags(7.0), 2: tags(1.0, evaluation_protocol="another"), 3: tags(7.0), 4: tags(6.0)}
    assert settled_champion(1, versions) == 4
    assert settled_champion(1, {n: v for n, v in versions.items() if n != 4}) == 1  # the tie with v3 keeps v1
    assert settled_champion(2, versions) == 2  # the champion's protocol decides what competes
    assert settled_champion(1, versions, passed_over=frozenset({4})) == 1  # its files are not listed


def test_a_forced_champion_stays_until_a_later_version_beats_it() -> None:
    from genbench.components.register.registry import FLOOR_TAG, apply_promotion

    store = Registry([3.0, 9.0])
    apply_promotion(store, "genbench-vae", 1)
    assert apply_promotion(store, "genbench-vae", 2, force=True).promoted  # settling does not undo the force
    assert store.aliases == {"champion": "2"} and read_floor(store.tags[FLOOR_TAG]) == Floor(2, 2)
    store.add(5.0)  # better than the forced v2, worse than v1 which the force set aside
    assert apply_promotion(store, "genbench-vae", 3).promoted and store.aliases == {"champion": "3"}


@pytest.mark.parametrize("recorded", ['{"version": 2, "through": 5}', '{"version": 2, "thru": 5}', "2..5", None,
                                      '{"version": "two", "through": 5}'])
def test_a_floor_is_read_only_when_recorded_whole(recorded: str | None) -> None:
    """A misspelt or unreadable floor tag sets nothing aside (every version competes again), never crashes."""
    assert read_floor(recorded) == (Floor(2, 5) if recorded == Floor(2, 5).tag() else None)
