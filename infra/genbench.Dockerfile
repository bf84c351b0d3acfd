# The genbench image the Prefect worker runs flows in: the locked environment plus the project.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /opt/genbench
COPY pyproject.toml uv.lock README.md ./
COPY genbench genbench
COPY components components
COPY models models
COPY flows flows
RUN uv sync --locked --no-dev
COPY params.yaml dvc.yaml ./
ENV PATH="/opt/genbench/.venv/bin:${PATH}"
