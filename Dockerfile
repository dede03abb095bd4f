# syntax=docker/dockerfile:1
#
# One image per m8 service, each with its own distribution and dependencies only:
#
#   docker build --target api        -t m8-api:local .
#   docker build --target keyrotator -t m8-keyrotator:local .
#   docker build --target reactors   -t m8-reactors:local .
#
# Without Docker or a registry, `python -m m8.devservices.images` builds all three with podman
# on a Debian base made by debootstrap (README.md, "Containers").
#
# The command is the argument list after `m8`; each image has its service's commands only
# (m8-api: `api`; m8-keyrotator: `keyrotator`, `keys`; m8-reactors: `reactor vault|aws`):
#
#   docker run --rm m8-reactors:local reactor vault
#
# The images hold no key, token or credential: operators mount them at run time
# (see deploy/README.md). None holds development tooling (`m8 dev`, OpenBao, the MongoDB
# stand-in, moto): that is m8-dev, in no image.
#
# Operators: pin the base image by digest (python:3.11-slim@sha256:...) for builds
# that can be reproduced, and rebuild regularly for security updates of the base.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: one virtual environment per service, from uv.lock -----------------------
FROM ${PYTHON_IMAGE} AS build

# Only for a build behind a TLS-intercepting proxy: the CA bundle pip and uv trust, e.g.
# `--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt --build-arg SSL_CERT_FILE=...
# --build-arg UV_NATIVE_TLS=1` with the host's bundle mounted read-only
# (`podman build -v /etc/ssl/certs:/etc/ssl/certs:ro`). Build arguments of this stage never
# reach a service image.
ARG PIP_CERT
ARG SSL_CERT_FILE
ARG UV_NATIVE_TLS

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_CACHE_DIR=/var/cache/uv
# uv in a venv of its own: a distribution's Python (Debian's) refuses `pip install` into
# the system (PEP 668) and may have no pip; the official python image works alike.
RUN python -m venv /opt/uv \
 && /opt/uv/bin/python -m pip install 'uv==0.13.9' \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv

WORKDIR /src
# The workspace's lock first: each service's third-party dependencies are a layer of their
# own, built again only when the lock or the root pyproject changes, not on every code
# change. `--frozen` reads the lock without the members' pyprojects.
COPY pyproject.toml uv.lock ./

# The same path in every stage: a venv's scripts name their interpreter by absolute path.
# `--package`: that service's distribution and what it depends on; `--no-editable`: the
# code is copied into the venv. The smoke test imports every command of the image (and the
# reactors' adapters, which a reactor loads at start), so a missing dependency fails the
# build, not a deployment. (A stage inherits no build argument: each declares those uv
# reads.) The cache mount (downloaded wheels) is shared by the three
# builds and kept between builds; it is in no image.
FROM build AS build-api
ARG SSL_CERT_FILE
ARG UV_NATIVE_TLS
RUN --mount=type=cache,target=/var/cache/uv,sharing=locked \
    UV_PROJECT_ENVIRONMENT=/opt/m8 uv sync --frozen --no-dev --no-install-workspace --package m8-api
# Every member's pyproject is needed to read the lock; only this service's are installed.
# (.dockerignore keeps everything else out of the context, key files above all.)
COPY libs ./libs
COPY services ./services
COPY tools ./tools
RUN --mount=type=cache,target=/var/cache/uv,sharing=locked \
    UV_PROJECT_ENVIRONMENT=/opt/m8 uv sync --frozen --no-dev --no-editable --package m8-api \
 && /opt/m8/bin/m8 api --help > /dev/null && /opt/m8/bin/python -c "import uvloop"

FROM build AS build-keyrotator
ARG SSL_CERT_FILE
ARG UV_NATIVE_TLS
RUN --mount=type=cache,target=/var/cache/uv,sharing=locked \
    UV_PROJECT_ENVIRONMENT=/opt/m8 uv sync --frozen --no-dev --no-install-workspace --package m8-keyrotator
COPY libs ./libs
COPY services ./services
COPY tools ./tools
RUN --mount=type=cache,target=/var/cache/uv,sharing=locked \
    UV_PROJECT_ENVIRONMENT=/opt/m8 uv sync --frozen --no-dev --no-editable --package m8-keyrotator \
 && /opt/m8/bin/m8 keyrotator --help > /dev/null && /opt/m8/bin/m8 keys --help > /dev/null

FROM build AS build-reactors
ARG SSL_CERT_FILE
ARG UV_NATIVE_TLS
RUN --mount=type=cache,target=/var/cache/uv,sharing=locked \
    UV_PROJECT_ENVIRONMENT=/opt/m8 uv sync --frozen --no-dev --no-install-workspace --package m8-reactors
COPY libs ./libs
COPY services ./services
COPY tools ./tools
RUN --mount=type=cache,target=/var/cache/uv,sharing=locked \
    UV_PROJECT_ENVIRONMENT=/opt/m8 uv sync --frozen --no-dev --no-editable --package m8-reactors \
 && /opt/m8/bin/m8 reactor --help > /dev/null \
 && /opt/m8/bin/python -c "from m8 import stores; from m8.stores.adapters import adapter_factory; [adapter_factory(t) for t in stores.all_types()]"

# --- runtime: what every service image shares ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric user, so that Kubernetes can check runAsNonRoot and operators know whom
# the key files must belong to (m8 refuses a private key file that group or others may
# read, so the file must be owned by the user the process runs as).
ARG M8_UID=10001
ARG M8_GID=10001
RUN groupadd --system --gid "${M8_GID}" m8 \
 && useradd --system --uid "${M8_UID}" --gid m8 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin m8

# Byte code was compiled at install time; nothing is written at run time, so the root
# file system can be read-only. JSON logs on stdout.
ENV PATH=/opt/m8/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    M8_LOG_FORMAT=json

USER ${M8_UID}:${M8_GID}
WORKDIR /tmp

# Exec form: m8 is PID 1 and gets SIGTERM itself; every service stops cleanly on it
# (reactors finish the uploads in hand first: give them a 90 s grace period).
ENTRYPOINT ["m8"]
CMD ["--help"]

# --- the service images --------------------------------------------------------------
FROM runtime AS keyrotator
LABEL org.opencontainers.image.title="m8-keyrotator" \
      org.opencontainers.image.description="m8 key rotator: one-time upload keys, signing, destruction"
COPY --from=build-keyrotator /opt/m8 /opt/m8
CMD ["keyrotator"]

FROM runtime AS reactors
LABEL org.opencontainers.image.title="m8-reactors" \
      org.opencontainers.image.description="m8 reactors: write uploads into the upstream stores"
COPY --from=build-reactors /opt/m8 /opt/m8
# /metrics, /healthz and /readyz on M8_REACTOR_METRICS_PORT if set; nothing else listens.
CMD ["reactor", "--help"]

# Last, so that a build without --target makes the API image.
FROM runtime AS api
LABEL org.opencontainers.image.title="m8-api" \
      org.opencontainers.image.description="m8 HTTP API"
COPY --from=build-api /opt/m8 /opt/m8
# The API listens on every interface of its container (the default, 127.0.0.1, is for
# running on a workstation).
ENV M8_API_HOST=0.0.0.0 \
    M8_API_PORT=8080
EXPOSE 8080
CMD ["api"]
