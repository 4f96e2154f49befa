"""A request's route template: what its metrics and its log line name it by, never its ids or values.

Starlette's matched route gives the template of most routes (``/dicomweb/{tenant}/studies/{study}``); the
FHIR API's one catch-all route (``/fhir/{tenant}/{path:path}``) is refined from the FHIR URL patterns
(http.html#general: ``[type]/[id]/_history/[vid]``, ``$[operation]``) into templates such as
``/fhir/{tenant}/Patient/{id}/_history/{vid}``. A segment becomes a template word only when it is
a known R4 resource type, a registered operation or a fixed FHIR keyword; anything else a client typed
is a placeholder, so the set of templates is bounded whatever the clients send.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from fhir_server.definitions import resource_types

FHIR_CATCH_ALL = "/fhir/{tenant}/{path:path}"
UNMATCHED = "(unmatched)"
KEYWORDS = frozenset({"_history", "_search", "metadata", "$meta", "$validate"})


class RouteTemplates:
    """Route templates of requests, knowing the operations the FHIR router registered."""

    def __init__(self, operations: Collection[str] = ()) -> None:
        self.operations = frozenset(f"${name}" for name in operations) | {"$validate", "$meta", "$everything"}
        self.types = resource_types()

    def of(self, scope: Mapping[str, Any]) -> str:
        """The template of a routed request's scope (Starlette puts the matched route in it)."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return UNMATCHED
        if path == FHIR_CATCH_ALL:
            return self.fhir(str((scope.get("path_params") or {}).get("path", "")))
        return path

    def fhir(self, path: str) -> str:
        """``/fhir/{tenant}/`` and the FHIR path after it, as a template."""
        segments = [p for p in path.split("/") if p]
        words = [self._word(index, segment, segments) for index, segment in enumerate(segments[:5])]
        if len(segments) > 5:
            words.append("...")
        return "/".join(["/fhir/{tenant}", *words])

    def _word(self, index: int, segment: str, segments: list[str]) -> str:
        if segment.startswith("$"):
            return segment if segment in self.operations else "{operation}"
        if segment in KEYWORDS or segment == ".well-known":
            return segment
        if index == 0 or (index == 2 and segments[1] not in ("_history",)):
            return segment if segment in self.types else "{type}"  # [type], or a compartment's [type]
        previous = segments[index - 1]
        return "{vid}" if previous == "_history" else "{id}"
