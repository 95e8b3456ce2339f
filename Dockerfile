# syntax=docker/dockerfile:1
# gtcorrect images. Targets:
#   api     docker build --target api -t gtcorrect-api .
#   worker  docker build --target worker -t gtcorrect-worker .                       (CPU torch)
#   GPU worker: torch's CUDA wheels bundle the CUDA runtime and cuDNN, so the default base runs on a
#   GPU once the NVIDIA container toolkit provides the driver:
#           docker build --target worker --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#   or on an NVIDIA CUDA runtime image (Python 3.11 is installed from apt when the base lacks it):
#           docker build --target worker \
#             --build-arg WORKER_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 \
#             --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
# Both targets also carry alembic.ini and migrations/, so the api image runs the one-shot migration.

ARG PYTHON_BASE=python:3.11-slim-bookworm
ARG WORKER_BASE=python:3.11-slim-bookworm

# ---- bases: Python 3.11 and the unprivileged user ---------------------------------------------------
FROM ${PYTHON_BASE} AS api-base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home gtc

FROM ${WORKER_BASE} AS worker-base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home gtc

# ---- builders: the project and its dependencies in /opt/venv -----------------------------------------
# The venv is built on the same base it runs on: a venv points at its base's interpreter.
FROM api-base AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the chosen index (CPU for the api); its range matches pyproject.toml.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch>=2.4,<2.15"
COPY pyproject.toml README.md ./
COPY gtcorrect ./gtcorrect
COPY app ./app
COPY worker ./worker
RUN pip install --no-cache-dir .

FROM worker-base AS worker-builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch>=2.4,<2.15"
COPY pyproject.toml README.md ./
COPY gtcorrect ./gtcorrect
COPY app ./app
COPY worker ./worker
RUN pip install --no-cache-dir .

# ---- api ---------------------------------------------------------------------------------------------
FROM api-base AS api
ENV PATH=/opt/venv/bin:$PATH GTC_DATA_DIR=/var/lib/gtcorrect
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
RUN mkdir -p /var/lib/gtcorrect && chown gtc:gtc /var/lib/gtcorrect
USER 10001:10001
EXPOSE 8000
# The slim image has no curl; the venv's python does the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"]
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]

# ---- worker ------------------------------------------------------------------------------------------
FROM worker-base AS worker
ENV PATH=/opt/venv/bin:$PATH GTC_DATA_DIR=/var/lib/gtcorrect
WORKDIR /app
COPY --from=worker-builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
RUN mkdir -p /var/lib/gtcorrect && chown gtc:gtc /var/lib/gtcorrect
USER 10001:10001
# One prefork child runs one job at a time; when it exits its GPU memory goes back to the driver.
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "train", "--pool=prefork", "-c", "1", "--loglevel=INFO"]
