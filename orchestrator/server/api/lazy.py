"""Route families a server may never be asked for (events, automations, API keys, webhooks, a
deployment's schedules and versions, the UI's pages), imported and included at the first request for
one of their paths instead of at the start.

Their modules (routes, FastAPI's dependants and adapters of each route, the UI's pages) were a
tenth of a server's start and stay in its memory for good; most servers are only asked for runs,
deployments and work pools. Nothing of it shows: each family has its place in the route table from
the start (an empty router, included where its routes would have been, with the same prefix and
dependencies), its routes are added into that place before a request for one of its paths is
routed, and the app's ``routes`` and ``openapi()`` load every family first, so the OpenAPI document
and anything that walks the routes see them all.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class Family:
    """Routes ``load`` includes (into the empty routers the app was given for them), at the first
    request whose path is one of ``prefixes`` or under one (``{}`` in a prefix stands for any one
    segment, a path parameter: ``/api/deployments/{}/schedules``); ``everything_else``: at the first
    request whose path is under none of them nor the eager routes' prefixes (the UI's pages)."""

    name: str
    load: Callable[[], None]
    prefixes: tuple[str, ...] = ()
    everything_else: bool = False
    loaded: bool = False

    def __post_init__(self) -> None:
        self._under = _matcher(self.prefixes)

    def serves(self, path: str) -> bool:
        return self._under(path)


def _matcher(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a path is one of ``prefixes`` or under one (``{}``: one segment)."""
    if not any("{}" in prefix for prefix in prefixes):
        return lambda path: _under(path, prefixes)
    pattern = re.compile(_pattern(prefixes))
    return lambda path: pattern.match(path) is not None


def _pattern(prefixes: tuple[str, ...]) -> str:
    """A regular expression matching (at the start) a path that is one of ``prefixes`` or under one."""
    either = "|".join("[^/]+".join(map(re.escape, prefix.split("{}"))) for prefix in prefixes)
    return f"(?:{either})(?:/|$)"


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


class LazyRoutes:
    """The families of one app and the lock that loads each exactly once."""

    def __init__(self, families: list[Family], *, eager_prefixes: tuple[str, ...], load_all_at: tuple[str, ...]) -> None:
        self.families = families
        self.eager_prefixes = eager_prefixes  # paths the app answers from the start
        self.load_all_at = load_all_at  # paths whose answer lists every route (the OpenAPI document)
        self._lock = threading.Lock()
        self.all_loaded = not families
        self._nothing_to_load = self._nothing_to_load_pattern()

    def _nothing_to_load_pattern(self) -> re.Pattern[str]:
        """One match for most requests (a run's claim, its states, heartbeats): a path under an eager
        prefix and under no family not loaded yet, instead of a scan of every family's patterns (a
        server nobody asks for the UI never loads every family). The families' alternatives come
        first, so a family's path under an eager prefix (``/api/events`` under ``/api``) is theirs."""
        families = [family.prefixes for family in self.families if not family.loaded and family.prefixes]
        eager = _pattern(self.eager_prefixes) if self.eager_prefixes else "(?!)"
        either = "|".join(_pattern(prefixes) for prefixes in families) or "(?!)"
        return re.compile(f"(?P<family>{either})|(?P<eager>{eager})")

    def pending_for(self, path: str) -> list[Family]:
        """The families not loaded yet that a request for ``path`` may need."""
        if self.all_loaded:  # every request once each family has been asked for: nothing to look at
            return []
        match = self._nothing_to_load.match(path)
        if match is not None and match.lastgroup == "eager" and path not in self.load_all_at:
            return []
        if path in self.load_all_at:
            return [family for family in self.families if not family.loaded]
        wanted = [family for family in self.families if not family.loaded and family.serves(path)]
        if not wanted and not _under(path, self.eager_prefixes):
            wanted = [family for family in self.families if not family.loaded and family.everything_else]
        return wanted

    def load(self, families: list[Family]) -> None:
        with self._lock:  # two first requests at once: one loads, the other waits for it
            for family in families:
                if not family.loaded:
                    family.load()
                    family.loaded = True
            self.all_loaded = all(family.loaded for family in self.families)
            self._nothing_to_load = self._nothing_to_load_pattern()

    def load_all(self) -> None:
        self.load(self.families)


class LoadOnFirstRequest:
    """ASGI middleware: loads the families a request's path needs, then passes the request on.
    The import runs on a worker thread, so requests for loaded routes go on meanwhile."""

    def __init__(self, app: ASGIApp, lazy: LazyRoutes) -> None:
        self.app, self.lazy = app, lazy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root + "/"):  # mounted under a prefix: routes see the rest
                path = path[len(root):]
            pending = self.lazy.pending_for(path)
            if pending:
                await run_in_threadpool(self.lazy.load, pending)
        await self.app(scope, receive, send)


class LazyApp(FastAPI):
    """A FastAPI app whose ``routes`` and ``openapi()`` include the families not loaded yet."""

    lazy_routes: LazyRoutes | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        if self.lazy_routes is not None:
            self.lazy_routes.load_all()
        return super().routes

    def openapi(self) -> dict[str, Any]:
        if self.lazy_routes is not None:
            self.lazy_routes.load_all()
        return super().openapi()

    def load_on_first_request(self, lazy: LazyRoutes) -> None:
        self.lazy_routes = lazy
        self.add_middleware(LoadOnFirstRequest, lazy=lazy)
