"""What an API key may do (docs/security.md), apart from the API keys' models (``schemas.api_keys``):
every request's check (``server/api/gate.py``, the route table of ``server/api/scopes.py``) needs
the scopes, while only the API keys' routes need the models, so a server loads those with that
family (``api/lazy.py``)."""

import enum


class Scope(enum.StrEnum):
    """What a key may do. Each route needs one scope (``server/api/scopes.py``); a key's scopes grant
    those in ``GRANTS``."""

    ADMIN = "admin"  # everything: keys, work pools and queues, and all the others
    DEPLOY = "deploy"  # deployments, schedules, automations; and read
    RUN = "run"  # create and cancel runs, send events; and read
    WORKER = "worker"  # claim runs, report their states, heartbeats, logs (of its pools); and read
    READ = "read"  # read only


GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.DEPLOY: frozenset({Scope.DEPLOY, Scope.READ}),
    Scope.RUN: frozenset({Scope.RUN, Scope.READ}),
    Scope.WORKER: frozenset({Scope.WORKER, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
}


def granted(scopes: list[Scope] | frozenset[Scope] | set[Scope]) -> frozenset[Scope]:
    """Every scope the given ones grant."""
    return frozenset().union(*(GRANTS[s] for s in scopes)) if scopes else frozenset()
