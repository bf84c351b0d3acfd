"""One SeaweedFS and one PostgreSQL for the whole test run, started as `genbench stack up` starts them and shared by
every test file that needs a store but not a whole stack (test_dvc_remote.py, test_kubernetes_pool.py): under
`pytest -n 4 --dist loadfile` those files run at once on different workers. They are never killed: the fault tier's
kill tests start servers of their own (tests/faults/killable.py).

The first worker to come starts the two servers in the run's shared temporary folder; each use registers there
(by pid) while it lasts; the last to leave stops them (a worker that comes after that starts them again
on the same data and keys). Each user takes its own database (`Backing.database`) and its own keys into the shared
buckets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genbench import stack
from genbench.stack import postgres, seaweedfs
from genbench.stack.files import stack_keys
from genbench.stack.processes import alive, free_port, stop, wait_healthy

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Backing:
    s3_url: str
    access_key: str
    secret_key: str
    postgres_port: int
    postgres_password: str  # the superuser's
    pids: tuple[int, int]  # SeaweedFS, PostgreSQL

    @property
    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": stack.REGION}

    def database(self, driver: str) -> str:
        """A new database of its own, owned by a new role with a new password: its SQLAlchemy URL."""
        name = f"test_{secrets.token_hex(4)}"
        password = secrets.token_hex(16)
        postgres.ensure_database(HOST, self.postgres_port, self.postgres_password, name, password)
        return postgres.url(driver, HOST, self.postgres_port, name, password)


def s3_of(env: dict[str, str], attempts: int = 1) -> Any:
    """A boto3 client of the store that `env`'s AWS_* variables name (a stack's environment)."""
    return seaweedfs.s3_client(env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                               attempts)


def object_keys(client: Any, bucket: str) -> list[str]:
    """Every key in `bucket`, page by page."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def postgres_rows(query: str, **connect: Any) -> list[tuple]:
    """`query`'s rows, on a connection made with psycopg2's keywords (host, port, user, password, dbname)."""
    import psycopg2

    connection = psycopg2.connect(connect_timeout=10, **connect)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall()
    finally:
        connection.close()


def shared_folder(basetemp: Path) -> Path:
    """The run's temporary folder every xdist worker shares, from this process's pytest basetemp (tests/conftest.py's
    `built_once` shares it too)."""
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp


def outside_pytest(prefix: str) -> Path:
    """A new folder for a stack's data outside pytest's temporary folders, removed by the caller. As root, PostgreSQL
    runs as another account (genbench/stack/postgres.py), which must pass through every folder above its data for
    as long as it runs, and every pytest session that starts on the machine resets /tmp/pytest-of-root to 0700: a
    cluster below it then loses its own files. /tmp lets every account through; the folder lets them pass (o+x),
    listing nothing."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        folder.chmod(0o711)
    return folder


@contextmanager
def shared_backing(base: Path) -> Iterator[Backing]:
    """SeaweedFS and PostgreSQL, started by the first user and stopped by the last; their data in a folder of their
    own (`outside_pytest`), who uses them in base/stack-backing.*."""
    from filelock import FileLock

    lock, users, state = (base / f"stack-backing.{part}" for part in ("lock", "users", "json"))
    with FileLock(str(lock)):
        backing = _running(state) or _start(state)
        users.mkdir(exist_ok=True)
        user = users / f"{os.getpid()}-{secrets.token_hex(4)}"  # one per use: a process may hold two
        user.touch()
    try:
        yield backing
    finally:
        with FileLock(str(lock)):
            user.unlink()
            if not any(alive(int(other.name.split("-")[0])) for other in users.iterdir()):
                _stop(state, backing)


def _running(state: Path) -> Backing | None:
    if not state.exists():
        return None
    saved = json.loads(state.read_text())["backing"]
    backing = Backing(**saved | {"pids": tuple(saved["pids"])})
    return backing if all(alive(pid) for pid in backing.pids) else None


def _start(state: Path) -> Backing:
    folder = outside_pytest("genbench-backing-")
    (folder / "logs").mkdir()
    keys = stack_keys(folder)
    s3 = seaweedfs.start_seaweedfs(folder, HOST, keys["s3_access_key"], keys["s3_secret_key"])
    port = free_port(HOST)
    try:
        database = postgres.start_postgres(folder, HOST, port, keys["postgres_password"])
    except BaseException:
        seaweedfs.stop_seaweedfs(s3)
        shutil.rmtree(folder)
        raise
    backing = Backing(s3["url"], keys["s3_access_key"], keys["s3_secret_key"], port, keys["postgres_password"],
                      (s3["pid"], database["pid"]))
    state.write_text(json.dumps({"backing": asdict(backing), "ports": s3["ports"], "folder": str(folder)}))
    try:
        wait_healthy("s3", s3, lambda: seaweedfs.lists_buckets(backing.s3_url, backing.access_key, backing.secret_key))
        seaweedfs.create_buckets(backing.s3_url, backing.access_key, backing.secret_key,
                                 {stack.ARTIFACT_BUCKET, stack.DVC_BUCKET})
        wait_healthy("postgres", database, lambda: postgres.is_ready(HOST, port))
    except BaseException:
        _stop(state, backing)
        raise
    return backing


def _stop(state: Path, backing: Backing) -> None:
    """Stop both servers and remove their folder (its logs go with it: pytest keeps none of this run's either)."""
    stop(backing.pids[1], first=signal.SIGINT)
    saved = json.loads(state.read_text())
    seaweedfs.stop_seaweedfs({"pid": backing.pids[0], "ports": saved["ports"]})
    shutil.rmtree(saved["folder"], ignore_errors=True)
    state.unlink()
