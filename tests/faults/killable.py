"""Servers a test may kill -9 and restart: a SeaweedFS and a PostgreSQL of its own (started as tests/services/backing.py
starts the run's shared pair, which other test files use at the same time and so must never be killed), MLflow's
server on top of them as `genbench stack up` starts it (basic auth, its store a database in this PostgreSQL, artifacts
proxied to this SeaweedFS with the stack's transient-only retries), and a `Tap` in front of MLflow, all on 127.0.0.1.

The tap only watches: it forwards every byte both ways and, when a request line matches, runs an action before it
forwards that request, so a test can kill a server at a chosen moment of a client's work. Only genbench's client goes
through the tap; MLflow talks to SeaweedFS and PostgreSQL directly, so the outage it meets is the real one: refused
connections, a database gone mid-session, a store that comes back on the same ports with the data it had on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genbench import stack
from genbench.stack import postgres, seaweedfs
from genbench.stack.apps import start_mlflow
from genbench.stack.files import stack_keys
from genbench.stack.processes import alive, free_port, stop, wait_healthy

from ..services.backing import object_keys, postgres_rows

HOST = "127.0.0.1"
BACKENDS_EXIT_S = 30.0  # a backend notices its postmaster's death when it next waits


class Tap:
    """A pass-through TCP relay to `target` on a port of its own: `arm(method, marker, action)` runs `action` once,
    when the first request whose line starts with `method` and holds `marker` arrives, before forwarding it;
    `seen` counts such requests since (a client's retries of it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.pattern: tuple[bytes, bytes] | None = None
        self.action: Callable[[], None] | None = None
        self.seen = 0
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def arm(self, method: bytes, marker: bytes, action: Callable[[], None]) -> None:
        with self.lock:
            self.pattern, self.action, self.seen = (method + b" ", marker), action, 0

    def close(self) -> None:
        """Stop listening and close every connection (a client's idle keep-alive ones would hold up MLflow's
        shutdown)."""
        with self.lock:
            sockets, self.open = [self.listener, *self.open], set()
        for sock in sockets:
            with contextlib.suppress(OSError):  # close alone leaves accept() and recv() waiting
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self.lock:
            self.open |= {client, upstream}
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client:
                    self._watch(data.split(b"\r\n", 1)[0])
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _watch(self, request_line: bytes) -> None:
        """Count a matching request, and run the armed action on the first, before the request goes on."""
        with self.lock:
            if self.pattern is None or not request_line.startswith(self.pattern[0]) or \
                    self.pattern[1] not in request_line:
                return
            self.seen += 1
            action, self.action = self.action, None
        if action is not None:
            action()


class KillableStack:
    """SeaweedFS, PostgreSQL and MLflow's server (behind `tap`) with their data in `folder`, which `close` removes.
    `kill_s3`/`kill_postgres` kill -9 a store, `start_s3`/`start_postgres` start it again on the same ports and data
    (MLflow keeps its S3 and database URLs) and return once it answers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "logs").mkdir()
        self.keys = stack_keys(folder)
        self.s3_keys = (self.keys["s3_access_key"], self.keys["s3_secret_key"])
        self.pg_port = free_port(HOST)
        self.services: dict[str, dict[str, Any]] = {}
        self.tap: Tap | None = None
        try:
            self.services["s3"] = seaweedfs.start_seaweedfs(folder, HOST, *self.s3_keys)
            self.s3_url = self.services["s3"]["url"]
            self.start_postgres()
            self._wait_s3()
            seaweedfs.create_buckets(self.s3_url, *self.s3_keys, {stack.ARTIFACT_BUCKET, stack.DVC_BUCKET})
            database = "mlflow"
            postgres.ensure_database(HOST, self.pg_port, self.keys["postgres_password"], database,
                                     self.keys["mlflow_db_password"])
            self.database = {"host": HOST, "port": self.pg_port, "dbname": database, "user": database,
                             "password": self.keys["mlflow_db_password"]}
            (stack.stack_dir(folder) / "logs").mkdir(parents=True)
            self.password = stack.write_mlflow_auth_config(folder)
            self.services["mlflow"] = start_mlflow(folder, HOST, self.s3_url, self.s3_env, postgres.url(
                "psycopg2", HOST, self.pg_port, database, self.keys["mlflow_db_password"]))
            self.tap = Tap((HOST, int(self.services["mlflow"]["url"].rsplit(":", 1)[1])))
        except BaseException:
            self.close()
            raise

    @property
    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.s3_keys[0], "AWS_SECRET_ACCESS_KEY": self.s3_keys[1],
                "AWS_DEFAULT_REGION": stack.REGION}

    def ready(self) -> dict[str, str]:
        """Wait for MLflow (started, not awaited, in __init__); the environment that logs a client in through the
        tap."""
        mlflow = self.services["mlflow"]
        wait_healthy("mlflow", mlflow, f"{mlflow['url']}/health")
        assert self.tap is not None
        return {"MLFLOW_TRACKING_URI": self.tap.url, "MLFLOW_TRACKING_USERNAME": stack.MLFLOW_ADMIN,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def kill_s3(self) -> None:
        stop(self.services["s3"]["pid"], first=signal.SIGKILL)

    def start_s3(self) -> None:
        self.services["s3"] = seaweedfs.start_seaweedfs(self.folder, HOST, *self.s3_keys,
                                                        ports=self.services["s3"]["ports"])
        self._wait_s3()

    def _wait_s3(self) -> None:
        wait_healthy("s3", self.services["s3"], lambda: seaweedfs.lists_buckets(self.s3_url, *self.s3_keys))

    def kill_postgres(self) -> None:
        """kill -9 of the postmaster, then wait for its backends: they notice its death and exit, and until the last
        has, the shared memory they hold makes a new postmaster on the same data refuse to start. The postmaster is
        stopped first, so that it forks no backend between the listing and the kill."""
        pid = self.services["postgres"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        backends = _children(pid)
        stop(pid, first=signal.SIGKILL)
        deadline = time.monotonic() + BACKENDS_EXIT_S
        while any(alive(backend) for backend in backends):
            assert time.monotonic() < deadline, f"PostgreSQL's backends {backends} outlived their postmaster"
            time.sleep(0.1)

    def start_postgres(self) -> None:
        """Start (again) on the same data and port; initdb runs only on the first start (postgres.py)."""
        self.services["postgres"] = postgres.start_postgres(self.folder, HOST, self.pg_port,
                                                            self.keys["postgres_password"])
        wait_healthy("postgres", self.services["postgres"], lambda: postgres.is_ready(HOST, self.pg_port))

    def objects(self, bucket: str) -> dict[str, str]:
        """Every object in `bucket`, read back whole: key -> md5 of its bytes. The reads retry a 5xx: a restarted
        SeaweedFS lists its buckets before its volume server has told the master which volumes it holds."""
        client = seaweedfs.s3_client(self.s3_url, *self.s3_keys, attempts=10)
        keys = object_keys(client, bucket)
        return {key: hashlib.md5(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
                for key in keys}

    def rows(self, query: str) -> list[tuple]:
        """The rows of a query on MLflow's database, straight from PostgreSQL."""
        return postgres_rows(query, **self.database)

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
        # weed takes its grace period to end on SIGTERM, and its data goes with the folder: it is killed at once
        for name, first in {"mlflow": signal.SIGTERM, "postgres": signal.SIGINT}.items():
            if name in self.services:
                stop(self.services[name]["pid"], first=first)
        if "s3" in self.services:
            seaweedfs.stop_seaweedfs(self.services["s3"], first=signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc: the postmaster's backends run as another account)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return [child for child in found if alive(child)]
