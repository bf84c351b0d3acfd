"""An authenticated, namespaced `kfp.Client` for a multi-user Kubeflow Pipelines, and the backend version check.

A multi-user KFP (Kubeflow's default install) refuses anonymous requests and files every experiment and run under
a profile namespace. `kfp.Client(host, existing_token=TOKEN, namespace=NS)` sends `Authorization: Bearer TOKEN` on
every request and the namespace with the experiment; the run joins that experiment's namespace. The token comes
from `find_token`: a file named on the command line, the KFP_TOKEN variable, or the service-account token KFP
projects into pods (KF_PIPELINES_SA_TOKEN_PATH, as kfp.Client's own in-cluster credentials read it). No token is
ever logged or written.

The compiled pipeline fans artifacts in with `dsl.Collected` (KFP backend 2.14) and gives tasks optional secrets
(`optional` in kfp-kubernetes' SecretAsEnv, which the 2.15 backend's driver is the first to accept; older ones stop
every task with "unknown field"), so `connect` refuses a backend older than MIN_BACKEND, read from the API server's
healthz `tag_name` (kfp.Client.get_kfp_healthz drops that field and retries a refused token, pausing between
tries, so the generated healthz call is made directly).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TOKEN_ENV = "KFP_TOKEN"
MIN_BACKEND = (2, 15, 0)
REFUSED = (401, 403)  # the API server (or the ingress in front of it) did not accept the token


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def find_token(token_file: Path | None) -> str:
    """The bearer token: `token_file`, else $KFP_TOKEN, else the in-cluster service-account token file."""
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH

    if token_file is not None:
        if not Path(token_file).is_file():
            raise ValueError(f"--token-file {token_file}: no such file; give the file that holds the KFP token")
        return _nonempty(Path(token_file).read_text(), f"--token-file {token_file}")
    if os.environ.get(TOKEN_ENV, "").strip():
        return _nonempty(os.environ[TOKEN_ENV], TOKEN_ENV)
    in_cluster = Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH)
    if in_cluster.is_file():
        return _nonempty(in_cluster.read_text(), str(in_cluster))
    raise ValueError(f"no KFP token: pass --token-file FILE, export {TOKEN_ENV}=TOKEN, or run in a pod whose "
                     f"service-account token KFP projects to ${KF_PIPELINES_SA_TOKEN_ENV} (default {in_cluster})")


def _nonempty(token: str, source: str) -> str:
    if not token.strip():
        raise ValueError(f"{source} holds an empty KFP token; put the token there")
    return token.strip()


def backend_version(tag: str) -> tuple[int, int, int] | None:
    """The KFP release of a healthz `tag_name` ("2.15.0", "v2.15.0-rc.1"), or None for a build without one."""
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", tag)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def check_backend(host: str, tag: str) -> None:
    """Refuse a backend older than MIN_BACKEND; a build without a release tag ("unknown") passes, named by the
    caller."""
    found = backend_version(tag)
    if found is not None and found < MIN_BACKEND:
        raise ValueError(f"KFP backend at {host} is {tag}; this pipeline needs KFP {version_text(MIN_BACKEND)} or "
                         "newer (dsl.Collected artifacts, optional secrets): upgrade Kubeflow Pipelines")


def connect(host: str, token: str, namespace: str) -> tuple[Any, str]:
    """A kfp.Client on `host` sending `token` and filing runs under `namespace`, and its backend's version tag,
    checked (`check_backend`)."""
    from kfp import Client

    client = Client(host=host, existing_token=token, namespace=namespace)
    response = client.healthzs.healthz_service_get_healthz(_preload_content=False)
    try:
        tag = str(json.loads(response.data).get("tag_name", "unknown"))
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{host} did not answer as the KFP API (a login page?): give the KFP API's address "
                         "(KFP_HOST) and a token its ingress accepts") from None
    check_backend(host, tag)
    return client, tag


@contextmanager
def refused_token(host: str) -> Iterator[None]:
    """A request the server refused for its credentials → one line, exit 2 (a ValueError)."""
    from kfp_server_api.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        if exc.status not in REFUSED:
            raise
        raise ValueError(f"KFP at {host} refused the token ({exc.status} {exc.reason}): pass a valid token for a user "
                         "or service account with access to the namespace (--token-file, KFP_TOKEN or the "
                         "service-account token)") from None
