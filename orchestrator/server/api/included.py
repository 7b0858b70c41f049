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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
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


__all__ = ["IncludedRoute", "router"]
