# One Dockerfile, three images (build context = the repository root):
#   docker build --target catalog  -t hybrid-catalog/catalog:0.1.0  .
#   docker build --target operator -t hybrid-catalog/operator:0.1.0 .
#   docker build --target checker  -t hybrid-catalog/checker:0.1.0  .
# Wheels are built in a throwaway stage; the runtime stages only install them,
# then drop pip/setuptools, and run as an unprivileged user (uid 10001, the
# chart's runAsUser) with a read-only root filesystem in Kubernetes.
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so a
# build never has to pull one (RUN --mount needs only BuildKit itself).
#
# Every third-party file is pinned with its hash (requirements-image*.txt,
# `make image-lock`): `--require-hashes` refuses anything else.
#
# PYTHON_IMAGE may name any Debian-based image with python/pip on PATH; `make
# image-test` builds a local stand-in when no registry is reachable.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements-image.txt requirements-image-build.txt ./
# Third-party dependencies: binary wheels only (no compiler needed), each
# checked against the lock's hashes.
RUN pip wheel --require-hashes --only-binary=:all: -r requirements-image.txt --wheel-dir /wheels
# The four packages, built with the locked setuptools (no build isolation, so
# no unpinned backend is fetched) and without dependencies (they are above).
RUN python -m venv /build \
 && /build/bin/pip install --require-hashes --only-binary=:all: -r requirements-image-build.txt
COPY services/hybridcache/ services/hybridcache/
COPY services/catalog/ services/catalog/
COPY services/checker/ services/checker/
COPY operator/pyproject.toml operator/pyproject.toml
COPY operator/cache_operator/ operator/cache_operator/
RUN /build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels \
        ./services/hybridcache ./services/catalog ./services/checker ./operator

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app

FROM runtime AS catalog
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels catalog \
 && pip check \
 && pip uninstall --yes pip setuptools wheel
USER 10001:10001
EXPOSE 8000
# Docker's own check mirrors the chart's readiness probe (/readyz; /healthz is
# liveness). CATALOG_PORT: set it when `serve` is given another --port.
ENV CATALOG_PORT=8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['CATALOG_PORT']}/readyz\", timeout=2)"]
CMD ["python", "-m", "catalog", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS operator
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels cache-operator \
 && pip check \
 && pip uninstall --yes pip setuptools wheel
USER 10001:10001
EXPOSE 9100 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["python", "-m", "cache_operator", "run"]

# The consistency checker: talks to the replicas over HTTP only.
#   docker run hybrid-catalog/checker:0.1.0 --url http://… --metrics-port 9109
FROM runtime AS checker
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels catalog-checker \
 && pip check \
 && pip uninstall --yes pip setuptools wheel
USER 10001:10001
ENTRYPOINT ["python", "-m", "catalog_checker"]
CMD ["--help"]
