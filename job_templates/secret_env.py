"""Environment values given as references to a secret instead of the value (pure).

In job variables ``env``, a value may be ``{"secret_ref": {...}}``:

* ``{"secret_ref": {"name": "db", "key": "password"}}``: a key of a Kubernetes Secret in the
  run's namespace; the Kubernetes worker renders it as ``valueFrom.secretKeyRef``, so the value
  never leaves the cluster (neither the API nor the worker ever sees it).
* ``{"secret_ref": {"file": "/run/secrets/db-password"}}``: a file on the worker's host; the
  Docker and process workers read it when they start the run (trailing newlines dropped, as a
  shell's ``$(cat file)`` does) and scrub its text from every line they write.

What the API, events and the UI show of a reference is the reference, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class SecretRefError(ValueError):
    """A reference this kind of worker cannot resolve (wrong shape, unreadable file)."""


def reference(value: object) -> Mapping[str, Any] | None:
    """The ``secret_ref`` of an env value, or None for a plain value."""
    if isinstance(value, Mapping) and isinstance(value.get("secret_ref"), Mapping):
        return value["secret_ref"]  # type: ignore[no-any-return]
    return None


def kubernetes_env_entry(name: str, value: object) -> dict[str, Any]:
    """One container ``env`` entry: a plain value, or ``valueFrom.secretKeyRef`` for a reference."""
    ref = reference(value)
    if ref is None:
        return {"name": name, "value": str(value)}
    if not ref.get("name") or not ref.get("key"):
        raise SecretRefError(f"env {name}: a Kubernetes secret_ref needs 'name' and 'key', got {sorted(ref)}")
    key_ref: dict[str, Any] = {"name": str(ref["name"]), "key": str(ref["key"])}
    if "optional" in ref:
        key_ref["optional"] = bool(ref["optional"])
    return {"name": name, "valueFrom": {"secretKeyRef": key_ref}}


def resolve_files(env: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    """``env`` with every file reference replaced by the file's text (on this host), and the
    texts read (to scrub from what the worker writes). Raises ``SecretRefError`` naming the
    variable for a reference that is not a file or a file that cannot be read."""
    resolved: dict[str, str] = {}
    texts: set[str] = set()
    for name, value in env.items():
        ref = reference(value)
        if ref is None:
            resolved[str(name)] = str(value)
            continue
        if not ref.get("file"):
            raise SecretRefError(f"env {name}: this worker reads secret_ref {{'file': path}} only, got {sorted(ref)}")
        try:
            text = Path(str(ref["file"])).read_text().rstrip("\n")
        except OSError as error:
            raise SecretRefError(f"env {name}: cannot read secret file {ref['file']}: {error.strerror}") from None
        resolved[str(name)] = text
        if text:
            texts.add(text)
    return resolved, texts
