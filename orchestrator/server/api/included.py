"""Routers whose routes are built once, where they are served: ``router(...)`` is an ``APIRouter``
for routers that are only ever included (every router of the API and the UI).

FastAPI (0.16x) builds a route twice when its router is included: the router's ``APIRoute`` at the
module's ``@router.get(...)`` (the dependant, a ``TypeAdapter`` per parameter and per answer, the
request handler), and again, under the inclusion's prefix and dependencies, the first time a request
walks that router (``_EffectiveRouteContext.from_api_route``). Only the second is ever used: the
request's match, its handling and the OpenAPI document all go through it. The first was ~40 ms of a
server's start for the routes every start includes (and as much again for a lazy family, at its
first request).

``IncludedRoute`` keeps what the inclusion reads (path, endpoint and options, as given) and builds
nothing more. Anything else asked of it (its dependant, handler, regex: a route served on its own,
or a FastAPI that copies routes at ``include_router``) builds it in full first, as ``APIRoute``
would have at declaration, so it behaves as one wherever it is used.

``add_routes(app, router, ...)`` puts a router's routes into the app's own table instead of including
the router: FastAPI (0.16x) keeps an included router as one entry of the table, and a request tries
every route of each included router ahead of its own, each try ~4x the cost of trying a route of the
app's own table (the router's version walk, the request's route context set and restored around each
route, the matching router tried twice: bench/RESULTS.md, issue 22, branch h4).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, params
from fastapi.datastructures import Default
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id
from starlette.routing import get_name

# What ``_EffectiveRouteContext.from_api_route`` (and an empty prefix's check in ``include_router``)
# reads of the route, with ``APIRoute``'s defaults. The values are kept as given: building the
# effective route resolves them (the answer model from the return annotation, the description
# from the docstring) exactly as ``APIRoute`` resolves them.
_KEPT: dict[str, Any] = {
    "response_model": Default(None), "status_code": None, "summary": None, "description": None,
    "response_description": "Successful Response", "deprecated": None, "operation_id": None,
    "response_model_include": None, "response_model_exclude": None, "response_model_by_alias": True,
    "response_model_exclude_unset": False, "response_model_exclude_defaults": False,
    "response_model_exclude_none": False, "include_in_schema": True, "response_class": Default(JSONResponse),
    "dependency_overrides_provider": None, "openapi_extra": None,
    "generate_unique_id_function": Default(generate_unique_id), "strict_content_type": Default(True),
    "max_body_size": None,
}
_BUILD_LOCK = threading.RLock()


class IncludedRoute(APIRoute):
    """An ``APIRoute`` built only when used on its own (see the module's docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        self._declared = (path, endpoint, options)
        self.declared = self._declared  # kept once built: ``add_routes`` adds the route as declared
        self.path, self.endpoint = path, endpoint
        for name, default in _KEPT.items():
            setattr(self, name, options.get(name, default))
        self.tags = list(options.get("tags") or [])
        self.dependencies = list(options.get("dependencies") or [])
        self.responses = dict(options.get("responses") or {})
        self.callbacks = options.get("callbacks")
        if options.get("form_limits") is None:  # APIRoute's own for none given; any other: built in full
            self.form_limits = {}
        self.stream_item_type = None  # found from the endpoint by the effective route, as APIRoute finds it
        methods = options.get("methods")
        self.methods = {method.upper() for method in (methods or ["GET"])}
        self.name = get_name(endpoint) if options.get("name") is None else options["name"]

    def __getattr__(self, name: str) -> Any:
        # Called only for what __init__ did not set: the route is used as a route of its own.
        state = self.__dict__
        if name.startswith("__") or "_declared" not in state:
            raise AttributeError(name)
        with _BUILD_LOCK:  # another thread asking meanwhile waits for the build
            if state.get("_building"):  # asked by the build itself: not there yet, as in APIRoute's
                raise AttributeError(name)
            if "_declared" in state:
                path, endpoint, options = state["_declared"]
                state["_building"] = True
                try:
                    APIRoute.__init__(self, path, endpoint, **options)
                    del state["_declared"]
                finally:
                    del state["_building"]
        return object.__getattribute__(self, name)


def router(**options: Any) -> APIRouter:
    """``APIRouter(**options)`` whose routes are ``IncludedRoute``s."""
    return APIRouter(route_class=IncludedRoute, **options)


# What ``APIRouter.add_api_route`` takes of a route's declared options: the router the route was
# declared on has already combined its own (prefix, tags, dependencies, responses, classes, limits)
# into them; ``dependency_overrides_provider`` is the app router's own, as it is for an inclusion.
_ADDED = frozenset(inspect.signature(APIRouter.add_api_route).parameters) - {"self", "path", "endpoint"}


def add_routes(app: APIRouter, router: APIRouter, *, prefix: str = "",
               dependencies: Sequence[params.Depends] = ()) -> None:
    """``router``'s routes into ``app``'s own table, as ``app.include_router(router, prefix=prefix,
    dependencies=dependencies)`` serves and documents them (the same paths, dependencies first, tags,
    answers, names and order; the OpenAPI document is compared byte for byte by
    ``tests/integration/test_route_table.py``) but tried as ``app``'s own routes (the module's
    docstring). Each is an ``IncludedRoute`` again: built in full when first tried by a request.
    A router with other routes than ``IncludedRoute``s (whose declared options are not kept), or
    with what an inclusion carries besides its routes (event handlers, form limits), is included."""
    if (router.on_startup or router.on_shutdown or router.form_limits != APIRouter().form_limits
            or not all(isinstance(route, IncludedRoute) for route in router.routes)):
        app.include_router(router, prefix=prefix, dependencies=dependencies)
        return
    for route in router.routes:
        path, endpoint, options = route.declared
        unknown = set(options) - _ADDED - {"dependency_overrides_provider"}
        if unknown:
            raise TypeError(f"add_routes cannot carry {sorted(unknown)} of {path}")
        kept = {name: value for name, value in options.items() if name in _ADDED}
        kept["dependencies"] = [*dependencies, *(options.get("dependencies") or [])]
        app.add_api_route(prefix + path, endpoint, route_class_override=IncludedRoute, **kept)


def again(router: APIRouter, *operations: tuple[str, str]) -> APIRouter:
    """A router holding ``router``'s routes of ``operations`` (method, path as declared, the router's
    prefix in it) once more, as declared but out of the OpenAPI document (which shows them in their
    place): for the head of the app's table, where the busiest routes cost a request least to find.
    Routes other than ``IncludedRoute``s (whose declared options are not kept) are only in their place."""
    again = APIRouter(route_class=IncludedRoute)
    for method, path in operations:
        (route,) = [route for route in router.routes if route.path == path and method in route.methods]
        if not isinstance(route, IncludedRoute):
            continue
        _, endpoint, options = route.declared
        kept = {name: value for name, value in options.items() if name in _ADDED}
        again.add_api_route(path, endpoint, **{**kept, "methods": [method], "include_in_schema": False})
    return again


__all__ = ["IncludedRoute", "add_routes", "again", "router"]
