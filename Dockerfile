# syntax=docker/dockerfile:1
#
# One image for every m8 service: `m8 api`, `m8 keyrotator`, `m8 reactor vault|aws`, and
# the operator's `m8 keys ...`. The command is the argument list after `m8`:
#
#   docker build -t m8-secrets:local .
#   docker run --rm m8-secrets:local --help
#   docker run ... m8-secrets:local reactor vault
#
# The image holds no key, token or credential: operators mount them at run time
# (see deploy/README.md). It installs the project without its dev/test extras, so it has
# no OpenBao, MongoDB stand-in or moto server in it.
#
# Operators: pin the base image by digest (python:3.11-slim@sha256:...) for builds
# that can be reproduced, and rebuild regularly for security updates of the base.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the distribution into a virtual environment ---------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The same path in both stages: a venv's scripts name their interpreter by absolute path.
RUN python -m venv /opt/m8

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the
# context, key files above all). README.md is the package's readme in pyproject.toml.
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services

# `pip install .`: runtime dependencies only (no [dev] or [test]). Every dependency has
# wheels for linux amd64/arm64 on CPython 3.11; on another platform pip may need a C
# compiler here (add build-essential to this stage only). The smoke test imports every
# command, so a missing dependency fails the build, not a deployment.
RUN /opt/m8/bin/pip install . \
 && /opt/m8/bin/m8 --help > /dev/null

# --- runtime ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="m8 secrets" \
      org.opencontainers.image.description="m8 server-side services: api, keyrotator, reactors" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric user, so that Kubernetes can check runAsNonRoot and operators know whom
# the key files must belong to (m8 refuses a private key file that group or others may
# read, so the file must be owned by the user the process runs as).
ARG M8_UID=10001
ARG M8_GID=10001
RUN groupadd --system --gid "${M8_GID}" m8 \
 && useradd --system --uid "${M8_UID}" --gid m8 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin m8

COPY --from=build /opt/m8 /opt/m8

# Byte code was compiled at install time; nothing is written at run time, so the root
# file system can be read-only. JSON logs on stdout. The API listens on every interface
# of its container (the default, 127.0.0.1, is for running on a workstation).
ENV PATH=/opt/m8/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    M8_LOG_FORMAT=json \
    M8_API_HOST=0.0.0.0 \
    M8_API_PORT=8080

USER ${M8_UID}:${M8_GID}
WORKDIR /tmp

# The API's port; the other services listen on nothing (reactors: /metrics on
# M8_REACTOR_METRICS_PORT if set).
EXPOSE 8080

# Exec form: m8 is PID 1 and gets SIGTERM itself; every service stops cleanly on it
# (reactors finish the uploads in hand first: give them a 90 s grace period).
ENTRYPOINT ["m8"]
CMD ["--help"]
