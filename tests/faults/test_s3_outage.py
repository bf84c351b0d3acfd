"""The S3 store behind MLflow goes down in the middle of the model upload of `genbench register` and comes back: the
registration retries and ends registered with its files stored, or fails with no version made and `champion`
where it was.

Servers as `genbench stack up` starts them (genbench/stack.py), on 127.0.0.1: moto's S3 and MLflow's basic-auth
server proxying artifacts to it, with the stack's transient-only retries. moto keeps its objects in memory, so
stopping its process would lose the bucket (and the first version's files with it): the outage is cut in front of
it instead. MLflow's S3 endpoint is a relay (`Relay`) that, when the upload of model.safetensors starts, resets
every open connection and stops listening for OUTAGE_S seconds: to MLflow, the server died mid-request and
restarted with its data intact.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genbench import stack
from genbench.cli import app
from genbench.components.artifacts import WEIGHTS
from genbench.components.registry import CHAMPION_ALIAS, logged_model_id
from genbench.flows.retries import is_transient
from genbench.layout import Layout

from .conftest import project_copy
from .records import FaultRecord

pytestmark = pytest.mark.server
HOST = "127.0.0.1"
OUTAGE_S = 4.0
HERE = Layout()


class Relay:
    """A TCP relay to `target` on its own port that can die: `cut_on(marker)` arms it to reset every connection
    and stop listening when a client sends `marker`, and to listen again `outage_s` seconds later."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, stack._free_port(HOST)
        self.marker: bytes | None = None
        self.outage_s = 0.0
        self.seen = 0  # PUT requests whose path holds the marker
        self.cut_at: float | None = None
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.listen()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut_on(self, marker: bytes, outage_s: float) -> None:
        self.marker, self.outage_s = marker, outage_s

    def close(self) -> None:
        self.marker = None
        self._drop()

    def _drop(self) -> None:
        """Stop listening and reset (RST, as a dying server's kernel does) every open connection."""
        with self.lock:
            doomed, self.open = [*self.open, self.listener], set()
            self.listener = None
        for sock in doomed:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.open |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                request_line = data.split(b"\r\n", 1)[0]
                if from_client and self.marker and request_line.startswith(b"PUT ") and self.marker in request_line:
                    self.seen += 1
                    if self.seen == 1:  # the first upload of the file: the server dies under it
                        self.cut_at = time.monotonic()
                        self._drop()
                        threading.Timer(self.outage_s, self.listen).start()
                        return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Relay, str]]:
    """moto's S3 behind a `Relay`, and MLflow's basic-auth server whose artifacts go through the relay; yields the
    client environment, the relay and moto's own URL."""
    root = tmp_path_factory.mktemp("outage-stack")
    folder = stack.stack_dir(root)
    (folder / "logs").mkdir(parents=True)
    keys = {"AWS_ACCESS_KEY_ID": f"genbench{secrets.token_hex(6)}", "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
            "AWS_DEFAULT_REGION": stack.REGION}
    started = []
    try:
        s3 = stack._start_s3(HOST, stack._free_port(HOST), folder, keys)
        started.append(s3)
        stack._wait_healthy("s3", s3, stack._s3_health_url(s3))
        stack._create_buckets(s3["url"], keys)
        relay = Relay((HOST, int(s3["url"].rsplit(":", 1)[1])))
        password = stack._write_mlflow_auth_config(root)
        mlflow = stack.start_mlflow(root, HOST, relay.url, keys)
        started.append(mlflow)
        stack._wait_healthy("mlflow", mlflow, f"{mlflow['url']}/health")
        yield ({"MLFLOW_TRACKING_URI": mlflow["url"], "MLFLOW_TRACKING_USERNAME": stack.MLFLOW_ADMIN,
                "MLFLOW_TRACKING_PASSWORD": password}, relay, s3["url"])
        relay.close()
    finally:
        for service in started:
            stack._stop(service["pid"])


def _register(out: str) -> tuple[int, BaseException | None, str]:
    result = CliRunner().invoke(app, ["register", "vae", "--out", out])
    return result.exit_code, result.exception, result.output


def test_s3_down_during_the_model_upload_registers_whole_or_not_at_all(
    servers: tuple[dict[str, str], Relay, str], faults_project: Path, fault: FaultRecord, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    env, relay, _ = servers
    fault.fault, fault.kind = f"S3 store down {OUTAGE_S:.0f} s from the start of the model upload", "outage"
    project = project_copy(faults_project, tmp_path / "project")
    monkeypatch.chdir(project)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, error, output = _register("registry/first.json")
    assert code == 0, f"{error!r}\n{output}"
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS).version == "1"

    metrics = project / HERE.metrics("vae", 0)  # a better model arrives: the second version would be champion
    record = json.loads(metrics.read_text())
    metrics.write_text(json.dumps(record | {"fid": record["fid"] - 1.0}))
    relay.cut_on(WEIGHTS.encode(), OUTAGE_S)
    started = time.monotonic()
    code, error, output = _register("registry/second.json")
    seconds = time.monotonic() - started

    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'genbench-vae'"))
    champion = client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS)
    assert relay.cut_at is not None, "the upload never reached S3 through the relay"
    if code == 0:
        assert versions == [1, 2] and champion.version == "2"
        stored = Path(mlflow.artifacts.download_artifacts(f"models:/{logged_model_id(champion.source)}",
                                                          dst_path=str(tmp_path / "stored")))
        weights = next(stored.rglob(WEIGHTS)).read_bytes()
        assert weights == (project / HERE.run("vae", 0) / WEIGHTS).read_bytes()
        assert relay.seen >= 2, "registered without uploading the weights again"
        fault.detail = (f"the weights' upload was cut and retried ({relay.seen} uploads through the relay); "
                        f"registered v2 as champion in {seconds:.0f} s, its stored weights equal to the run's")
        fault.lost = "the cut upload's time (retried)"
    else:
        assert versions == [1] and champion.version == "1", (versions, champion.version)
        fault.detail = (f"failed after {seconds:.0f} s ({'transient' if is_transient(error) else 'not transient'}: "
                        f"{str(error).splitlines()[0][:120]}); no version made, champion still v1")
        fault.lost = "the registration (nothing half-registered)"
