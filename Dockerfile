# syntax=docker/dockerfile:1.7
#
# Slipway image: a uv-built virtual environment copied into a slim runtime (docs/deploy/docker.md).
#
#   docker build -t slipway --build-arg GIT_SHA="$(git rev-parse HEAD)" .
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp \
#     -e SECRET_KEY=... -e DATABASE_URL=postgresql://... -e REDIS_URL=redis://... slipway
#
# Nothing in the runtime stage compiles: every dependency ships a manylinux wheel, the
# builder resolves them from the frozen lockfile, and the runtime gets only the venv.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- builder: resolve and install into /app/.venv -------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

COPY --from=uv /uv /usr/local/bin/uv

# Bytecode compiled at build time (the runtime filesystem is read-only); copy, not
# hard-link, out of the cache mount; never download a Python, use the image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Dependencies first, from the lockfile alone: this layer is rebuilt only when
# pyproject.toml or uv.lock change, not on every source edit.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

COPY pyproject.toml uv.lock README.md ./
COPY src ./src
# The project itself as a regular (non-editable) install: the runtime needs no source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the venv, a non-root user, nothing else ----------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ARG GIT_SHA=""

# A fixed, unprivileged uid/gid (10001) that matches the manifests' runAsUser/user:, with
# no login shell and no writable home.
RUN groupadd --system --gid 10001 slipway \
    && useradd --system --no-log-init --uid 10001 --gid slipway \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin slipway

# Owned by root and not writable by the app user: the code cannot be changed at run time.
COPY --from=builder /app/.venv /app/.venv
COPY --chmod=0755 docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY gunicorn.conf.py /app/gunicorn.conf.py

# Read-only root filesystem: nothing is written outside /tmp (a tmpfs / emptyDir), no .pyc
# at run time, Prometheus' multiprocess files in /tmp, no .env or secrets baked in
# (SECRETS_DIR=/run/secrets is where Docker and Kubernetes mount them). Local report
# storage lands in /tmp too: mount a volume there or use STORAGE_BACKEND=s3 to keep it.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    ENVIRONMENT=production \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    STORAGE_LOCAL_DIR=/tmp/storage \
    GIT_SHA=${GIT_SHA}

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# `docker stop` sends this to PID 1 (the server, exec'd by the entrypoint): in-flight
# requests drain for GRACEFUL_TIMEOUT; give `docker stop -t` / stop_grace_period more.
STOPSIGNAL SIGTERM
# The image has no curl: the probe is the app's own stdlib-only command.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["slipway", "healthcheck"]

# Exec form everywhere: no shell between Docker and the server, so signals reach it.
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["slipway", "serve", "--server", "gunicorn"]
