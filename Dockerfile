# weightserve container images.
#
#   docker build -t weightserve .                     CPU runtime image (the default target)
#   docker build --target gpu -t weightserve:gpu .    onnxruntime-gpu on a CUDA runtime base
#   docker build --target trainer -t weightserve:trainer .   `weightserve train` (torch, CPU)
#
# Offline or air-gapped builds: any Debian-based image with python3 + python3-venv can stand in
# for BASE_IMAGE (deploy/docker/build-base-image.sh makes one with debootstrap); the builders
# install the C compiler (and, where the base lacks them, Python's headers) with apt from the
# base's own package sources, so those must be reachable. pip reads its usual PIP_* settings
# from build args, e.g. a local wheel folder served over HTTP:
#   --network host --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=http://127.0.0.1:8765/
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG GPU_BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# source: the venv location, the build tools and the project's source; the builders below
# install from it.
FROM ${BASE_IMAGE} AS source
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive
# The JSON request reader (service/protocol/_infer_json.c) is compiled when the project is
# installed: it needs a C compiler and Python's headers. python:*-slim images ship the headers;
# Debian's python3 keeps them in python3-dev. Only the builders get these tools: the runtime
# images copy the finished venv.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && if [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ]; then \
        apt-get install --yes --no-install-recommends python3-dev; \
    fi \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
COPY weightserve ./weightserve

# builder: a self-contained virtual environment holding the service and its serving deps only
# (torch belongs to the `train` extra and never enters an image). Build args are per stage, so
# each builder names pip's settings again.
FROM source AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
RUN /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && /opt/venv/bin/python -m compileall -q /opt/venv

# user: the unprivileged account every CPU image runs as.
FROM ${BASE_IMAGE} AS user
RUN groupadd --system --gid 10001 weightserve \
    && useradd --system --uid 10001 --gid weightserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin weightserve

# ---------------------------------------------------------------------------------------------
# runtime: base + venv + shipped models; no compilers, no build tools, not root.
FROM user AS runtime
COPY --from=builder /opt/venv /opt/venv
# The shipped models. Owned by the service user so that a named volume seeded from here stays
# writable for the trainer image (same uid); servers mount repositories read-only.
COPY --chown=10001:10001 models /models
# One server process per container: replicas are the unit of scale (compose, Kubernetes).
# onnxruntime's threads default to the container's CPU quota; /tmp (writable, also on a read-only
# root) holds the server's working folder, with a snapshot of every served version's files.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEIGHTSERVE_REPOSITORY=/models \
    WEIGHTSERVE_HOST=0.0.0.0 \
    WEIGHTSERVE_PORT=8000 \
    WEIGHTSERVE_WORKERS=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('WEIGHTSERVE_PORT', '8000'), timeout=2)"]
# Exec form: the server itself is PID 1 (no shell in between), so SIGTERM reaches it and it drains.
ENTRYPOINT ["weightserve", "serve"]

# ---------------------------------------------------------------------------------------------
# trainer: `weightserve train` (torch, CPU) writing new versions into a shared repository.
# PyPI's default torch wheel is a CUDA build of several GB; the compose file points pip at the
# CPU wheels with PIP_EXTRA_INDEX_URL.
FROM source AS trainer-builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
RUN /opt/venv/bin/pip install --no-compile ".[train]" \
    && /opt/venv/bin/pip uninstall --yes pip

FROM user AS trainer
COPY --from=trainer-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["weightserve", "train", "--repository", "/models"]

# ---------------------------------------------------------------------------------------------
# gpu: the same service with onnxruntime-gpu (CUDA + cuDNN come from the base image).
FROM ${GPU_BASE_IMAGE} AS gpu-builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive
# The distribution's python3 is the one the CUDA base is tested with; its version follows the base tag.
# gcc and python3-dev (Python's headers) compile the JSON request reader on install; the gpu
# image below copies the finished venv and gets neither.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
COPY weightserve ./weightserve
# onnxruntime and onnxruntime-gpu install the same module; keep only the GPU build.
RUN /opt/venv/bin/pip install --no-compile ".[gpu]" \
    && /opt/venv/bin/pip uninstall --yes onnxruntime onnxruntime-gpu \
    && /opt/venv/bin/pip install --no-compile --no-deps "onnxruntime-gpu>=1.20" \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${GPU_BASE_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 weightserve \
    && useradd --system --uid 10001 --gid weightserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin weightserve
COPY --from=gpu-builder /opt/venv /opt/venv
COPY --chown=10001:10001 models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEIGHTSERVE_REPOSITORY=/models \
    WEIGHTSERVE_HOST=0.0.0.0 \
    WEIGHTSERVE_PORT=8000 \
    WEIGHTSERVE_WORKERS=1 \
    WEIGHTSERVE_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]'
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('WEIGHTSERVE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["weightserve", "serve"]

# ---------------------------------------------------------------------------------------------
# The last stage is what a plain `docker build .` produces: the CPU runtime.
FROM runtime AS cpu
