"""The full route template of a request, prefixes of included routers included.

FastAPI 0.165 no longer copies the routes of an included router: `scope["route"]` is the
route as its own router declared it (`/products/{product_id}`), without the prefixes it
was included under (`/api/v1`). The full template comes from
`fastapi.routing.iter_route_contexts`, which walks the inclusions; it is resolved once per
route object and remembered. Routes define `__eq__` without `__hash__`, so they are keyed
by identity (the entry keeps the route alive, so its id cannot be reused).

Plain Starlette routes on a FastAPI router (the fast liveness probes, /metrics) leave no
`scope["route"]` at all, only the `endpoint` they matched: those are found among the
app's few plain routes by endpoint and path.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from slipway.platform.middleware.access_log import UNMATCHED_ROUTE, route_template

_Entry = tuple[BaseRoute, str]


def _full_templates(app: Any) -> dict[int, _Entry]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI copies routes: scope["route"] is already full
        return {}
    templates: dict[int, _Entry] = {}
    for context in iter_route_contexts(getattr(app, "routes", [])):
        path_format = context.path_format
        if isinstance(path_format, str) and path_format:
            # The first inclusion wins if one router object is included twice.
            route = context.original_route
            templates.setdefault(id(route), (route, path_format))
    return templates


def _plain_routes(app: Any) -> list[Route]:
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", [])
    # APIRoute subclasses Route but always sets scope["route"]; only plain ones are wanted.
    return [route for route in routes if type(route) is Route]


class RouteTemplates:
    """`resolve(scope)` -> `/api/v1/products/{product_id}`, or `<unmatched>`."""

    def __init__(self) -> None:
        self._templates: dict[int, _Entry] = {}
        self._plain: list[Route] | None = None

    def _resolve_plain(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is None:  # no route matched (404, or refused before routing)
            return UNMATCHED_ROUTE
        if self._plain is None:
            self._plain = _plain_routes(scope.get("app"))
        path: str = scope["path"]
        for route in self._plain:
            if route.endpoint is endpoint and route.path_regex.match(path):
                return route.path_format
        # Mounts (static docs assets) and anything else the fallback knows how to name.
        return route_template(scope)

    def resolve(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return self._resolve_plain(scope)
        entry = self._templates.get(id(route))
        if entry is None or entry[0] is not route:
            # First request on this route: index the app's routes (a bounded set).
            self._templates.update(_full_templates(scope.get("app")))
            entry = self._templates.get(id(route))
            if entry is None or entry[0] is not route:
                entry = (route, route_template(scope))
                self._templates[id(route)] = entry
        return entry[1]
