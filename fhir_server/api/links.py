"""Bundle construction for search and history results (bundle.html, search.html#paging)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fhir_server.repository import Stored
from fhir_server.storage.port import ResourceVersion


def now_instant() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def full_url(base_url: str, resource_type: str, id: str) -> str:
    return f"{base_url}/{resource_type}/{id}"


def page_links(
    url: str,
    echo: list[tuple[str, str]],
    offset: int,
    count: int,
    total: int | None,
    got: int,
    snapshot: int | None,
) -> list[dict[str, str]]:
    """self/first/previous/next links; later pages keep the first page's snapshot (stable paging)."""

    def link(relation: str, at: int) -> dict[str, str]:
        params = [*echo, ("_count", str(count)), ("_offset", str(at))]
        if snapshot is not None:
            params.append(("_snapshot", str(snapshot)))
        return {"relation": relation, "url": f"{url}?{urlencode(params)}"}

    links = [link("self", offset)]
    if count > 0:
        links.append(link("first", 0))
        if offset > 0:
            links.append(link("previous", max(0, offset - count)))
        more = (offset + got < total) if total is not None else got >= count
        if more:
            links.append(link("next", offset + count))
    return links


def entry(base_url: str, stored: Stored, mode: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url(base_url, stored.version.resource_type, stored.version.id),
        "resource": resource,
        "search": {"mode": mode},
    }


def history_entry(base_url: str, version: ResourceVersion, resource: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"fullUrl": full_url(base_url, version.resource_type, version.id)}
    if resource is not None:
        item["resource"] = resource
    url = f"{version.resource_type}/{version.id}"
    item["request"] = {"method": version.method, "url": version.resource_type if version.method == "POST" else url}
    item["response"] = {
        "status": "410 Gone" if version.deleted else ("201 Created" if version.version == 1 else "200 OK"),
        "etag": f'W/"{version.version}"',
        "lastModified": version.last_updated,
    }
    return item
