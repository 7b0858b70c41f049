"""Worker kinds by pool type. Adding a kind: one module with a ``BaseWorker`` subclass and one line here."""

from __future__ import annotations

import importlib

from workers.base import BaseWorker

KINDS: dict[str, str] = {
    "process": "workers.process:ProcessWorker",
    "docker": "workers.docker:DockerWorker",
    "kubernetes": "workers.kubernetes:KubernetesWorker",
}


def unknown_kind(kind: str) -> str:
    """The error for a worker type that is none of ``KINDS``."""
    return f"unknown worker type '{kind}'; known types: {', '.join(KINDS)}"


def worker_class(kind: str) -> type[BaseWorker]:
    try:
        module_name, _, attribute = KINDS[kind].partition(":")
    except KeyError:
        raise KeyError(unknown_kind(kind)) from None
    cls: type[BaseWorker] = getattr(importlib.import_module(module_name), attribute)
    return cls
