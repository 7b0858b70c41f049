# One image for the API server, the workers and flow runs; `orch` is the entrypoint.
#
#   docker build -t orchestrator:0.1.0 .                          # FROM python:3.11-slim (the default)
#   docker build --build-arg BASE_IMAGE=my-registry/python:3.12-slim -t orchestrator .
#
# The base is any image with Python >= 3.11 and a POSIX sh. The build installs the project into a
# venv at /opt/orchestrator, with pip taken from the base image, which needs the package index.
# Offline (no index reachable): put wheels of every dependency, of pip and of setuptools into
# ./wheelhouse/ first; the build then installs from there only and needs no pip in the base:
#   pip wheel -w wheelhouse . tzdata && rm wheelhouse/orchestrator-*.whl && pip download -d wheelhouse pip setuptools
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
# .dockerignore lets in only the package sources, pyproject.toml, README.md and wheelhouse/.
COPY . .
# tzdata: Celery needs time zone data, which slim and distroless bases may lack.
# With a wheelhouse, pip runs from its own wheel, so it is never installed into the venv; the venv
# is byte-compiled here, so a non-root container never tries to write __pycache__.
RUN set -eu; \
    python3 -m venv --without-pip /opt/orchestrator; \
    if ls wheelhouse/pip-*.whl >/dev/null 2>&1; then \
      /opt/orchestrator/bin/python "$(ls wheelhouse/pip-*.whl | tail -n 1)/pip" install \
        --no-cache-dir --no-compile --disable-pip-version-check --no-index --find-links wheelhouse . tzdata; \
    else \
      python3 -m pip --python /opt/orchestrator/bin/python install \
        --no-cache-dir --no-compile --disable-pip-version-check . tzdata; \
    fi; \
    /opt/orchestrator/bin/python -m compileall -q -j 0 /opt/orchestrator/lib; \
    /opt/orchestrator/bin/orch --help >/dev/null

FROM ${BASE_IMAGE}
# A fixed numeric user, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN set -eu; \
    echo 'orch:x:10001:10001:orchestrator:/home/orch:/sbin/nologin' >>/etc/passwd; \
    echo 'orch:x:10001:' >>/etc/group; \
    mkdir -p /home/orch/.orchestrator /flows; \
    chown -R 10001:10001 /home/orch /flows
COPY --from=build /opt/orchestrator /opt/orchestrator
ENV PATH=/opt/orchestrator/bin:$PATH \
    HOME=/home/orch \
    ORCH_HOME=/home/orch/.orchestrator \
    ORCH_SERVER_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /flows
USER 10001:10001
EXPOSE 4300
# Healthy when the API this container talks to answers: for the server that is itself
# (ORCH_API_URL defaults to http://127.0.0.1:4300/api), for a worker the server it uses.
# Standard library only, so a probe costs ~30 ms rather than the CLI's import time.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as r; r.urlopen(os.environ.get('ORCH_API_URL', 'http://127.0.0.1:4300/api').rstrip('/') + '/health', timeout=4)"]
ENTRYPOINT ["orch"]
CMD ["server", "start"]
