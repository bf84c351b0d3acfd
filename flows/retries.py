"""Which failures are retried: those that can heal (a server down, restarting, overloaded or slow) and nothing else.

A bad parameter, a missing input or a bug fails the flow at once with its own message; so does an answer that a
retry would only repeat: a wrong password (401), a permission missing (403), a missing bucket, object or model
(404), a malformed request (400). The one rule serves every retry genbench makes itself: Prefect's task retries
(`retry_transient`) and the command line's "try again later" exit (genbench/cli.py). The clients' own retries
(MLflow's REST client, boto3's standard mode, configured in components/register/tracking.py) follow the same
rule with backoff: connection failures, timeouts, 408, 429 and 5xx.
"""

from __future__ import annotations

from typing import Any

# HTTP answers that a later attempt may not get: 408 (the server timed the request out) and 429 (throttled) among
# the 4xx; every 5xx but those that name a mismatch no restart mends (501 Not Implemented, 505 HTTP Version).
RETRIED_4XX = {408, 429}
PERMANENT_5XX = {501, 505}
# botocore's connection failures (module botocore.exceptions), by class name: botocore need not be imported.
TRANSIENT_BOTOCORE = {"EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError"}
# requests' and urllib3's failures to connect or to get an answer, by qualified class name (a subclass counts):
# RetryError and ResponseError mean a client ran out of retries on an answer it retries (5xx, 408, 429).
TRANSIENT_HTTP_CLIENT = {"requests.exceptions.ConnectionError", "requests.exceptions.Timeout",
                         "requests.exceptions.ChunkedEncodingError", "requests.exceptions.RetryError",
                         "urllib3.exceptions.ProtocolError", "urllib3.exceptions.TimeoutError",
                         "urllib3.exceptions.ResponseError"}
# ...except a certificate or URL the client refuses, which no retry changes (requests' SSLError is a ConnectionError)
PERMANENT_HTTP_CLIENT = {"requests.exceptions.SSLError", "urllib3.exceptions.SSLError",
                         "requests.exceptions.InvalidURL", "urllib3.exceptions.LocationValueError"}


def retried_status(status: int) -> bool:
    """Whether an HTTP answer with this status may change on a later attempt."""
    return status in RETRIED_4XX or (500 <= status < 600 and status not in PERMANENT_5XX)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a server answered with, as each client reports it; None when `exc` carries none (no answer,
    or not an HTTP error). MLflow's INTERNAL_ERROR is no status: MLflow gives that code to every error it does not
    classify, its client's own included."""
    lineage = _lineage(type(exc))
    if "botocore.exceptions.ClientError" in lineage:  # and the modelled ones made from it (NoSuchKey, ...)
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")  # type: ignore[attr-defined]
    if "requests.exceptions.HTTPError" in lineage:
        response = getattr(exc, "response", None)
        return None if response is None else response.status_code
    if "urllib.error.HTTPError" in lineage:
        return exc.code  # type: ignore[attr-defined]
    if "mlflow.exceptions.MlflowException" in lineage:
        from mlflow.exceptions import ERROR_CODE_TO_HTTP_STATUS

        code = getattr(exc, "error_code", None)
        return None if code == "INTERNAL_ERROR" else ERROR_CODE_TO_HTTP_STATUS.get(code)
    return None


def is_transient(exc: BaseException) -> bool:
    """True for connection failures, timeouts and retried HTTP answers (`retried_status`) anywhere in the exception's
    cause chain; the first link that carries an HTTP status decides. The chain is Python's own: an error raised
    `from None` (a stage's input error, naming the file, in place of a library's) ends it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (status := http_status(current)) is not None:
            return retried_status(status)
        kind = type(current)
        lineage = _lineage(kind)
        if lineage & PERMANENT_HTTP_CLIENT:
            return False
        if isinstance(current, (ConnectionError, TimeoutError)) or lineage & TRANSIENT_HTTP_CLIENT:
            return True
        if kind.__module__.startswith("botocore") and kind.__name__ in TRANSIENT_BOTOCORE:
            return True
        # otherwise its cause decides: MLflow wraps a refused connection in an INTERNAL_ERROR whose context is
        # requests' ConnectionError
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def _lineage(kind: type) -> set[str]:
    """The qualified names of a class and its bases."""
    return {f"{base.__module__}.{base.__qualname__}" for base in kind.__mro__}


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: go on to the retry policy only when the task failed transiently (a failed
    state's `result()` raises the task's exception, as Prefect's documentation shows)."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the task's own failure, classified, not handled
        return is_transient(exc)
    return False
