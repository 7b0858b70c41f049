"""``LazyRoutes.pending_for`` (server/api/lazy.py): which families a request's path loads, and that a
path of the eager routes is answered by one match, without a look at each family's patterns."""

from __future__ import annotations

from orchestrator.server.api.lazy import Family, LazyRoutes


def _routes(loaded: list[str]) -> tuple[LazyRoutes, list[str]]:
    def load(name: str) -> None:
        loaded.append(name)

    families = [
        Family("parts", lambda: load("parts"), prefixes=("/api/deployments/{}/schedules", "/api/deployments/{}/versions")),
        Family("events", lambda: load("events"), prefixes=("/api/events",)),
        Family("ui", lambda: load("ui"), prefixes=("/api/docs",), everything_else=True),
    ]
    return LazyRoutes(families, eager_prefixes=("/api", "/metrics"), load_all_at=("/api/openapi.json",)), loaded


def _names(lazy: LazyRoutes, path: str) -> list[str]:
    return [family.name for family in lazy.pending_for(path)]


def test_each_path_names_the_families_it_needs_before_and_after_loads() -> None:
    lazy, _ = _routes([])
    assert _names(lazy, "/api/flow_runs/abc/state") == []
    assert _names(lazy, "/api") == []
    assert _names(lazy, "/metrics") == []
    assert _names(lazy, "/api/events") == ["events"]
    assert _names(lazy, "/api/events/filter") == ["events"]
    assert _names(lazy, "/api/eventsx") == []  # under /api, not under /api/events
    assert _names(lazy, "/api/deployments/d1/schedules/s") == ["parts"]
    assert _names(lazy, "/api/deployments/d1/runs") == []
    assert _names(lazy, "/api/docs") == ["ui"]
    assert _names(lazy, "/runs/abc") == ["ui"]  # under no prefix: the UI's pages
    assert _names(lazy, "/metricsx") == ["ui"]
    assert _names(lazy, "/api/openapi.json") == ["parts", "events", "ui"]
    lazy.load(lazy.pending_for("/api/events"))
    assert _names(lazy, "/api/events") == []
    assert _names(lazy, "/api/deployments/d1/versions") == ["parts"]
    assert _names(lazy, "/api/openapi.json") == ["parts", "ui"]
    lazy.load_all()
    assert lazy.all_loaded and _names(lazy, "/runs/abc") == [] and _names(lazy, "/api/docs") == []


def test_a_path_of_the_eager_routes_is_answered_without_asking_each_family() -> None:
    # A run's claim, its state reports and heartbeats are such paths: every request paid a scan of
    # the families' patterns, on a server nobody asks for the UI (so never all loaded).
    lazy, _ = _routes([])
    asked: list[str] = []
    for family in lazy.families:
        serves = family.serves
        family.serves = lambda path, serves=serves, name=family.name: asked.append(name) or serves(path)  # type: ignore[method-assign]
    assert _names(lazy, "/api/flow_runs/abc/state") == []
    assert _names(lazy, "/api/work_pools/p/workers/heartbeat") == []
    assert asked == []
