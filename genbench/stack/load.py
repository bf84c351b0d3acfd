"""`genbench stack load`: how much concurrent use the running stack holds before it degrades.

Each client is a thread with its own MLflow run that loops, for a fixed time, over what genbench's clients do
against the stack: log a batch of per-step metrics (the training loop), read the registry (`champion` by alias, as
`register` and `sample --model` do), and every few loops upload an artifact (weights, through MLflow's artifact
proxy into the S3 bucket). Every request is timed; a failed one counts as an error (the command turns the client's
own retries off, MLFLOW_HTTP_REQUEST_MAX_RETRIES 0, so none hides in a retried one's latency). Levels of concurrency run
one after another on the same stack; a level *degrades* when its requests per second no longer grow by
`GAIN` over the level before, or when any request failed.

The clients share the machine with the servers (a local stack), so on few cores the figures measure the pair;
threads, not processes, keep the clients' own cost to one core (Python's lock) whatever their number.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OPERATIONS = ("log", "read", "upload")
EXPERIMENT = "genbench-load"
MODEL = "genbench-load"
UPLOAD_EVERY = 4  # loops between uploads: a training run logs metrics far more often than it stores files
METRICS_PER_BATCH = 8  # one step's losses, learning rate, EMA decay...
GAIN = 1.10  # more clients must buy at least this much throughput, or the level is where it degrades


@dataclass(frozen=True)
class Level:
    """One concurrency level: per operation and in total, what was asked and how it went."""
    clients: int
    seconds: float
    requests: dict[str, int]
    errors: dict[str, int]
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    first_error: str

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def per_second(self) -> float:
        return self.total / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"per_second": self.per_second}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest rank, as load tools report latency; nan with no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100), at least the first
    return ordered[int(rank) - 1]


def degrades_at(levels: Sequence[Level]) -> int | None:
    """The first level (its client count) with errors, or whose throughput grew by less than GAIN over the level
    before; None when every level still scaled."""
    for before, level in zip([None, *levels], levels):
        if level.failed or (before is not None and level.per_second < GAIN * before.per_second):
            return level.clients
    return None


def parse_levels(text: str) -> list[int]:
    """`1,2,4,8` → [1, 2, 4, 8]: positive and rising, or a ValueError naming the flag."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--clients {text!r}: give client counts separated by commas, e.g. 1,2,4,8") from None
    if not levels or any(n < 1 for n in levels) or levels != sorted(set(levels)):
        raise ValueError(f"--clients {text!r}: give rising positive counts, e.g. 1,2,4,8")
    return levels


class _Target:
    """The experiment, the runs and the registered model with a `champion` the clients read; removed by `close`."""

    def __init__(self, tracking_uri: str, clients: int, upload_kb: int, folder: Path) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(EXPERIMENT)
        self.experiment = found.experiment_id if found else self.client.create_experiment(EXPERIMENT)
        self.runs = [self.client.create_run(self.experiment, run_name=f"load-{i}").info.run_id
                     for i in range(clients)]
        if not self.client.search_registered_models(f"name = '{MODEL}'"):
            self.client.create_registered_model(MODEL)
        version = self.client.create_model_version(MODEL, f"runs:/{self.runs[0]}/model", self.runs[0],
                                                   await_creation_for=0)
        self.client.set_registered_model_alias(MODEL, "champion", version.version)
        self.payload = folder / "weights.bin"
        self.payload.write_bytes(os.urandom(upload_kb * 1024))
        # once of each, unmeasured: the server's first request of a kind opens connections and fills caches
        _client_loop(self, self.runs[0], time.monotonic(), lambda *_: None, loops=1)

    def close(self) -> None:
        for run_id in self.runs:
            self.client.delete_run(run_id)
        self.client.delete_registered_model(MODEL)


def _client_loop(target: _Target, run_id: str, until: float, record: Callable[[str, float, str], None],
                 loops: int | None = None) -> None:
    """Loop over the operations until `until` (or for `loops` loops), handing each request's time to `record`."""
    from mlflow.entities import Metric

    loop = 0
    while (time.monotonic() < until) if loops is None else loop < loops:
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("log", lambda: target.client.log_batch(run_id, metrics=[
                Metric(f"m{i}", float(loop), int(time.time() * 1000), loop) for i in range(METRICS_PER_BATCH)])),
            ("read", lambda: target.client.get_model_version_by_alias(MODEL, "champion")),
        ]
        if loop % UPLOAD_EVERY == 0:
            calls.append(("upload", lambda: target.client.log_artifact(run_id, str(target.payload),
                                                                       f"load/{loop}")))
        for operation, call in calls:
            started = time.monotonic()
            try:
                call()
                error = ""
            except Exception as exc:  # noqa: BLE001 - every failure is the measurement
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            record(operation, time.monotonic() - started, error)
        loop += 1


def run_level(target: _Target, clients: int, seconds: float) -> Level:
    """`clients` threads for `seconds`, each on its own run; their requests summed."""
    latencies: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    errors = dict.fromkeys(OPERATIONS, 0)
    first_error: list[str] = []
    lock = threading.Lock()

    def record(operation: str, took: float, error: str) -> None:
        with lock:
            if error:
                errors[operation] += 1
                first_error[:] = first_error or [error]
            else:
                latencies[operation].append(took)

    started = time.monotonic()
    threads = [threading.Thread(target=_client_loop, args=(target, target.runs[i], started + seconds, record))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started  # the last requests end after the deadline: count their time
    return Level(clients, took, {op: len(latencies[op]) + errors[op] for op in OPERATIONS}, errors,
                 {op: 1000 * percentile(latencies[op], 50) for op in OPERATIONS},
                 {op: 1000 * percentile(latencies[op], 99) for op in OPERATIONS}, first_error[0] if first_error else "")


def drive(tracking_uri: str, levels: Sequence[int], seconds: float, upload_kb: int,
          progress: Callable[[Level], None] = lambda level: None) -> list[Level]:
    """Each level in turn against the MLflow server at `tracking_uri` (logged in through the environment's
    MLFLOW_TRACKING_USERNAME/PASSWORD); `progress` hears each level as it ends. What the load made is deleted."""
    done: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="genbench-load-") as folder:
        target = _Target(tracking_uri, max(levels), upload_kb, Path(folder))
        try:
            for clients in levels:
                done.append(run_level(target, clients, seconds))
                progress(done[-1])
        finally:
            target.close()
    return done


def table(levels: Sequence[Level]) -> str:
    """The levels as a Markdown table: requests per second, p50/p99 latency per operation, errors."""
    head = ["clients", "requests/s", *(f"{op} p50 / p99 ms" for op in OPERATIONS), "errors"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for level in levels:
        cells = [str(level.clients), f"{level.per_second:.1f}",
                 *(f"{level.p50_ms[op]:.0f} / {level.p99_ms[op]:.0f}" for op in OPERATIONS),
                 f"{level.failed} of {level.total}" + (f" ({level.first_error})" if level.first_error else "")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
