"""An S3 store that can go down: the run's shared SeaweedFS (tests/services/backing.py) behind a relay that cuts it
off mid-upload, and MLflow's basic-auth server (as `genbench stack up` starts it, its store a database of its own in
the shared PostgreSQL) whose artifacts go through the relay, all on 127.0.0.1.

When armed, the relay resets every open connection and stops listening as soon as a client starts uploading a given
file, and listens again some seconds later: to MLflow, the S3 server died mid-request and came back. The relay
stays for the outages a restart of the server cannot make on cue (the cut at the first byte of one upload);
SeaweedFS keeps its data on disk, so a test may also stop the server itself.

`OutageStack(root)` returns once S3 answers; `ready` waits for MLflow, which takes a minute to start on a busy
2-core host, so tests/faults/conftest.py starts the stack with the first test of the tier.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path

from genbench import stack
from genbench.stack.apps import start_mlflow
from genbench.stack.processes import free_port, stop, wait_healthy

from ..services.backing import shared_backing, shared_folder

HOST = "127.0.0.1"


class Relay:
    """A TCP relay to `target` on its own port that can die: `cut_on(marker)` arms it to reset every connection
    and stop listening when a client sends `marker`, and to listen again `outage_s` seconds later."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port(HOST)
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
            listener, self.listener = self.listener, None
        if listener is not None:  # close alone leaves it listening while its thread waits in accept()
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
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
    """The shared S3 with the `Relay` in front of it and MLflow's server behind the relay, under `root`; stop with
    `close` (which leaves the shared servers to their last user)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services: list[dict] = []
        self.exit = contextlib.ExitStack()
        folder = stack.stack_dir(root)
        (folder / "logs").mkdir(parents=True)
        try:
            backing = self.exit.enter_context(shared_backing(shared_folder(root.parent)))
            self.keys = backing.s3_env
            self.relay = Relay((HOST, int(backing.s3_url.rsplit(":", 1)[1])))
            self.password = stack.write_mlflow_auth_config(root)
            self.mlflow = self._started(start_mlflow(root, HOST, self.relay.url, self.keys,
                                                     backing.database("psycopg2")))
        except BaseException:
            self.close()
            raise

    def _started(self, service: dict) -> dict:
        self.services.append(service)
        return service

    def ready(self) -> dict[str, str]:
        """Wait for MLflow; the environment that logs a client in to it."""
        wait_healthy("mlflow", self.mlflow, f"{self.mlflow['url']}/health")
        return {"MLFLOW_TRACKING_URI": self.mlflow["url"], "MLFLOW_TRACKING_USERNAME": stack.MLFLOW_ADMIN,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def close(self) -> None:
        if hasattr(self, "relay"):
            self.relay.close()
        for service in self.services:
            stop(service["pid"])
        self.exit.close()
