"""An S3 store that can go down: moto's S3 behind a relay that cuts it off mid-upload, and MLflow's basic-auth
server (as `genbench stack up` starts it) whose artifacts go through the relay, all on 127.0.0.1.

moto keeps its objects in memory, so stopping its process would lose the bucket (and every earlier version's
files with it): the outage is cut in front of it instead. When armed, the relay resets every open connection and
stops listening as soon as a client starts uploading a given file, and listens again some seconds later: to
MLflow, the S3 server died mid-request and came back with its data intact.

`OutageStack(root)` returns once S3 answers; `ready` waits for MLflow, which takes a minute to start on a busy
2-core host, so tests/faults/conftest.py starts the stack with the first test of the tier.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import threading
from pathlib import Path

from genbench import stack

HOST = "127.0.0.1"


class Relay:
    """A TCP relay to `target` on its own port that can die: `cut_on(marker)` arms it to reset every connection
    and stop listening when a client sends `marker`, and to listen again `outage_s` seconds later."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, stack._free_port(HOST)
        self.marker: bytes | None = None
        self.outage_s = 0.0
        self.seen = 0  # PUT requests whose path holds the marker
        self.cut = self.closed = False
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.listen()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def listen(self) -> None:
        if self.closed:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut_on(self, marker: bytes, outage_s: float) -> None:
        """Arm: the next upload whose path holds `marker` kills the relay for `outage_s` seconds."""
        self.marker, self.outage_s, self.seen, self.cut = marker, outage_s, 0, False

    @property
    def up(self) -> bool:
        return self.listener is not None

    def close(self) -> None:
        self.marker, self.closed = None, True
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
                        self.cut = True
                        self._drop()
                        threading.Timer(self.outage_s, self.listen).start()
                        return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class OutageStack:
    """moto, the `Relay` in front of it and MLflow's server behind the relay, under `root`; stop with `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = {"AWS_ACCESS_KEY_ID": f"genbench{secrets.token_hex(6)}",
                     "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24), "AWS_DEFAULT_REGION": stack.REGION}
        self.services: list[dict] = []
        folder = stack.stack_dir(root)
        (folder / "logs").mkdir(parents=True)
        try:
            s3 = self._started(stack._start_s3(HOST, stack._free_port(HOST), folder, self.keys))
            stack._wait_healthy("s3", s3, stack._s3_health_url(s3))
            stack._create_buckets(s3["url"], self.keys)
            self.relay = Relay((HOST, int(s3["url"].rsplit(":", 1)[1])))
            self.password = stack._write_mlflow_auth_config(root)
            self.mlflow = self._started(stack.start_mlflow(root, HOST, self.relay.url, self.keys))
        except BaseException:
            self.close()
            raise

    def _started(self, service: dict) -> dict:
        self.services.append(service)
        return service

    def ready(self) -> dict[str, str]:
        """Wait for MLflow; the environment that logs a client in to it."""
        stack._wait_healthy("mlflow", self.mlflow, f"{self.mlflow['url']}/health")
        return {"MLFLOW_TRACKING_URI": self.mlflow["url"], "MLFLOW_TRACKING_USERNAME": stack.MLFLOW_ADMIN,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def close(self) -> None:
        if hasattr(self, "relay"):
            self.relay.close()
        for service in self.services:
            stack._stop(service["pid"])
