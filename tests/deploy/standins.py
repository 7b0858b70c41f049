"""Stand-ins for the official ``postgres`` and ``redis`` images, built from this machine's own Debian
binaries: no registry is reachable here, so compose.yaml's PostgreSQL and Redis services cannot pull
their public images. Each stand-in keeps the interface compose.yaml relies on (POSTGRES_USER /
POSTGRES_PASSWORD / POSTGRES_DB, the data directory, ``pg_isready``; ``redis-server`` listening for
other containers, ``redis-cli``), so the same compose file runs with either.

They are built ``FROM local/python:3.11`` (testenv's image of the host's glibc, loader and busybox
``sh``) plus the binaries, every shared library ``ldd`` lists for them and their data files.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterable
from typing import Any

BASE = "local/python:3.11"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_FILES = [PG_BIN, "/usr/lib/postgresql/15/lib", "/usr/share/postgresql/15", "/usr/share/zoneinfo"]
REDIS_FILES = ["/usr/bin/redis-server", "/usr/bin/redis-cli"]

POSTGRES_DOCKERFILE = f"""\
FROM {BASE}
COPY rootfs/ /
RUN set -eu; \\
    echo 'postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh' >>/etc/passwd; \\
    echo 'postgres:x:999:' >>/etc/group; \\
    mkdir -p /var/lib/postgresql/data /var/run/postgresql; \\
    chown -R 999:999 /var/lib/postgresql /var/run/postgresql; \\
    chmod 700 /var/lib/postgresql/data; chmod 755 /usr/local/bin/docker-entrypoint.sh
ENV PATH={PG_BIN}:$PATH PGDATA=/var/lib/postgresql/data
USER 999:999
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
"""

# The official image's contract, as far as compose.yaml uses it: initialise once with the
# POSTGRES_* variables, accept password logins from other containers, run in the foreground.
POSTGRES_ENTRYPOINT = """\
#!/bin/sh
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp)
  printf '%s\\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pw"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" -E UTF8 --no-locale \\
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \\"$POSTGRES_DB\\"" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec "$@"
"""

REDIS_DOCKERFILE = f"""\
FROM {BASE}
COPY rootfs/ /
RUN set -eu; \\
    echo 'redis:x:999:999:Redis:/data:/bin/sh' >>/etc/passwd; echo 'redis:x:999:' >>/etc/group; \\
    mkdir -p /data; chown 999:999 /data
WORKDIR /data
USER 999:999
EXPOSE 6379
# Like the official image: without a config file, let other containers connect.
CMD ["redis-server", "--protected-mode", "no"]
"""


def _shared_libraries(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        result = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
                found.add(parts[2])
            elif parts and parts[0].startswith("/"):
                found.add(parts[0])
    return found


def _files(roots: Iterable[str]) -> list[str]:
    files: list[str] = []
    for root in roots:
        if os.path.isdir(root):
            for directory, _dirs, names in os.walk(root):
                # the LLVM JIT (bitcode, llvmjit.so and its 100 MB libLLVM) is not needed here
                files.extend(os.path.join(directory, n) for n in names
                             if "/bitcode" not in directory and not n.startswith("llvmjit"))
        else:
            files.append(root)
    return sorted(files)


def _context(dockerfile: str, files: list[str], extra: dict[str, str]) -> tuple[io.BytesIO, str]:
    """A build context as a tar: the Dockerfile, and each host file under rootfs/ at its own path
    (symlinks stored as the file they point to, so a library's soname resolves)."""
    binaries = [f for f in files if os.access(f, os.X_OK) or ".so" in os.path.basename(f)]
    wanted = sorted(set(files) | _shared_libraries(binaries))
    digest = hashlib.sha256(dockerfile.encode() + repr(sorted(extra.items())).encode())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        add_bytes("Dockerfile", dockerfile.encode())
        for name, text in extra.items():
            add_bytes(f"rootfs/{name}", text.encode(), 0o755)
        for path in wanted:
            real = os.path.realpath(path)
            if not os.path.isfile(real):
                continue
            stat = os.stat(real)
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            with open(real, "rb") as handle:
                add_bytes("rootfs" + path, handle.read(), stat.st_mode & 0o777)
    buffer.seek(0)
    return buffer, digest.hexdigest()[:12]


def _build(client: Any, repository: str, dockerfile: str, files: list[str], extra: dict[str, str]) -> str:
    import docker.errors

    context, digest = _context(dockerfile, files, extra)
    tag = f"{repository}:{digest}"
    try:
        client.images.get(tag)
        return tag  # same host files and recipe: already built
    except docker.errors.ImageNotFound:
        pass
    client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True,
                        forcerm=True, timeout=300)
    return tag


def missing_host_files() -> list[str]:
    """What this machine lacks to build the stand-ins (empty when they can be built)."""
    needed = [PG_BIN + "/postgres", PG_BIN + "/initdb", PG_BIN + "/pg_isready", *REDIS_FILES]
    return [p for p in needed if not os.path.exists(p)]


def build_standins(client: Any) -> dict[str, str]:
    """Build (or reuse) both stand-ins; returns {"postgres": tag, "redis": tag}."""
    postgres = _build(client, "local/postgres-standin", POSTGRES_DOCKERFILE, _files(PG_FILES),
                      {"usr/local/bin/docker-entrypoint.sh": POSTGRES_ENTRYPOINT})
    redis = _build(client, "local/redis-standin", REDIS_DOCKERFILE, _files(REDIS_FILES), {})
    return {"postgres": postgres, "redis": redis}
