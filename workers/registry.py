"""Worker kinds by pool type. Adding a kind: one module with a ``BaseWorker`` subclass and one line here."""

from __future__ import annotations

import importlib

from workers.base import BaseWorker

KINDS: dict[str, str] = {
    "process": "workers.process:ProcessWorker",
    "docker": "workers.docker:DockerWorker",
    "kubernetes": "workers.kubernetes:KubernetesWorker",
}


def worker_class(kind: str) -> type[BaseWorker]:
    try:
        module_name, _, attribute = KINDS[kind].partition(":")
    except KeyError:
        raise KeyError(f"unknown worker type '{kind}'; available: {', '.join(sorted(KINDS))}") from None
    cls: type[BaseWorker] = getattr(importlib.import_module(module_name), attribute)
    return cls
