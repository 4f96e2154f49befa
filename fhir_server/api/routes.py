"""A route table for the FHIR REST paths (http.html#summary): method + path pattern -> handler.

A pattern is a tuple of segments: a literal (``_history``), ``:name`` for any segment that is not
a reserved word (``_...``, ``$...``, ``metadata``), or ``$name`` for an operation segment
(``$everything``). The first route whose pattern matches wins; a path some route matches with
another method answers 405 naming the methods it takes, a path no route matches 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.errors import method_not_allowed, not_found
from fhir_server.repository import Repository

PathArgs = dict[str, str]
Handler = Callable[[Repository, FhirRequest, PathArgs], Awaitable[FhirResponse]]
RESERVED = ("metadata",)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: tuple[str, ...]
    handler: Handler

    def bind(self, path: list[str]) -> PathArgs | None:
        """The pattern's named segments taken from ``path``; None when it does not match."""
        if len(path) != len(self.pattern):
            return None
        args: PathArgs = {}
        for want, got in zip(self.pattern, path, strict=True):
            if want.startswith(":"):
                if got.startswith(("_", "$")) or got in RESERVED:
                    return None
                args[want[1:]] = got
            elif want.startswith("$"):
                if not got.startswith("$") or len(got) == 1:
                    return None
                args[want[1:]] = got[1:]
            elif want != got:
                return None
        return args


class RouteTable:
    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        """``add("GET POST", ":type/:id/$op", handler)``; the empty pattern is the base URL."""
        segments = tuple(p for p in pattern.split("/") if p)
        for method in methods.split():
            self._routes.append(Route(method, segments, handler))

    def match(self, method: str, path: list[str]) -> tuple[Handler, PathArgs]:
        allowed: list[str] = []
        for route in self._routes:
            args = route.bind(path)
            if args is None:
                continue
            if route.method == method:
                return route.handler, args
            if route.method not in allowed:
                allowed.append(route.method)
        if allowed:
            error = method_not_allowed(f"{method} is not allowed here; use {', '.join(allowed)}")
            error.headers["Allow"] = ", ".join(allowed)
            raise error
        raise not_found(f"no FHIR endpoint at {'/'.join(path)}")
