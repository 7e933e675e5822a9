"""The full route template of a request, prefixes of included routers included.

FastAPI 0.165 no longer copies the routes of an included router: `scope["route"]` is the
route as its own router declared it (`/products/{product_id}`), without the prefixes it
was included under (`/api/v1`). The full template comes from
`fastapi.routing.iter_route_contexts`, which walks the inclusions; it is resolved once per
route object and remembered. Routes define `__eq__` without `__hash__`, so they are keyed
by identity (the entry keeps the route alive, so its id cannot be reused).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute
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


class RouteTemplates:
    """`resolve(scope)` -> `/api/v1/products/{product_id}`, or `<unmatched>`."""

    def __init__(self) -> None:
        self._templates: dict[int, _Entry] = {}

    def resolve(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED_ROUTE
        entry = self._templates.get(id(route))
        if entry is None or entry[0] is not route:
            # First request on this route: index the app's routes (a bounded set).
            self._templates.update(_full_templates(scope.get("app")))
            entry = self._templates.get(id(route))
            if entry is None or entry[0] is not route:
                entry = (route, route_template(scope))
                self._templates[id(route)] = entry
        return entry[1]
