"""Which failures a Prefect task retries: transient I/O (network, S3, tracking server) and nothing else.

A bad parameter, a missing input or a bug fails the flow at once with its own message; retrying it would only
repeat the message two more times.
"""

from __future__ import annotations

from typing import Any

# Error codes an MLflow server answers with when a retry can succeed. Not INTERNAL_ERROR: MLflow gives every
# unclassified error that code, and its REST client already retries 5xx answers with backoff.
TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
# botocore's connection failures (module botocore.exceptions), by class name: botocore need not be imported.
TRANSIENT_BOTOCORE = {"EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError"}


def is_transient(exc: BaseException) -> bool:
    """True for connection failures and timeouts anywhere in the exception's cause chain. The chain is Python's
    own: an error raised `from None` (a stage's input error, naming the file, in place of a library's) ends it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        kind = type(current)
        if kind.__module__.startswith("botocore") and kind.__name__ in TRANSIENT_BOTOCORE:
            return True
        if kind.__module__.startswith(("requests", "urllib3")) and "Error" in kind.__name__:
            return not isinstance(current, (ValueError, TypeError))
        if kind.__name__ in {"MlflowException", "RestException"}:
            if getattr(current, "error_code", None) in TRANSIENT_MLFLOW_CODES:
                return True
            # otherwise its cause decides: MLflow wraps a refused connection in an INTERNAL_ERROR whose cause is
            # requests' ConnectionError
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: go on to the retry policy only when the task failed transiently (a failed
    state's `result()` raises the task's exception, as Prefect's documentation shows)."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the task's own failure, classified, not handled
        return is_transient(exc)
    return False
