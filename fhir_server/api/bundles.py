"""Batch and transaction Bundles (http.html#transaction), dispatched through the same router.

A transaction is atomic: all entries run in one storage transaction, in the order the spec
sets (DELETE, POST, PUT/PATCH, GET), ``urn:uuid:`` fullUrls and conditional references
(``Patient?identifier=...``) are resolved to the ids the server assigns or finds, and any
failing entry rolls back the whole Bundle. A batch runs each entry on its own.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.router import FhirRouter
from fhir_server.errors import OperationOutcomeError, bad_request
from fhir_server.repository import Repository

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}
MAX_ENTRIES = 10_000


class BundleProcessor:
    def __init__(self, router: FhirRouter) -> None:
        self._router = router

    async def __call__(self, repo: Repository, request: FhirRequest) -> FhirResponse:
        bundle = request.body
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise bad_request("POST to the base URL takes a batch or transaction Bundle", ["resourceType"])
        kind = bundle.get("type")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise bad_request("Bundle.entry must be an array", ["Bundle.entry"])
        if len(entries) > MAX_ENTRIES:
            raise OperationOutcomeError.of(413, "too-costly", f"at most {MAX_ENTRIES} entries in one Bundle")
        requests = [self._entry_request(request, e, i) for i, e in enumerate(entries)]
        if kind == "batch":
            return await self._batch(repo, request, requests)
        if kind == "transaction":
            return await self._transaction(repo, request, entries, requests)
        raise bad_request("Bundle.type must be batch or transaction", ["Bundle.type"])

    def _entry_request(self, parent: FhirRequest, item: Any, index: int) -> FhirRequest | OperationOutcomeError:
        where = f"Bundle.entry[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            return bad_request(f"{where} has no request", [f"{where}.request"])
        req = item["request"]
        method, url = req.get("method"), req.get("url")
        if method not in _ORDER or not isinstance(url, str) or not url:
            return bad_request(f"{where}.request needs a method and a url", [f"{where}.request"])
        if url.startswith(parent.base_url + "/"):
            url = url[len(parent.base_url) + 1 :]
        parts = urlsplit(url)
        headers = {}
        for field, header in (
            ("ifMatch", "if-match"),
            ("ifNoneMatch", "if-none-match"),
            ("ifNoneExist", "if-none-exist"),
            ("ifModifiedSince", "if-modified-since"),
        ):
            if isinstance(req.get(field), str):
                headers[header] = req[field]
        body = item.get("resource")
        if method == "PATCH" and isinstance(body, dict) and body.get("resourceType") == "Binary":
            import base64
            import json

            try:
                body = json.loads(base64.b64decode(body.get("data", "")))
            except ValueError as exc:
                return bad_request(f"{where}: the PATCH Binary does not hold a JSON Patch: {exc}")
        return FhirRequest(
            method=method,
            path=[p for p in parts.path.split("/") if p],
            params=parse_qsl(parts.query, keep_blank_values=True),
            headers=headers,
            body=body,
            base_url=parent.base_url,
            access=parent.access,
        )

    async def _batch(
        self, repo: Repository, request: FhirRequest, requests: list[FhirRequest | OperationOutcomeError]
    ) -> FhirResponse:
        results = []
        for item in requests:
            if isinstance(item, OperationOutcomeError):
                results.append(_error_entry(item))
                continue
            try:
                if not item.path:
                    raise bad_request("a Bundle entry cannot itself be a batch or transaction")
                await self._resolve_conditional_references(repo, item)
                results.append(_response_entry(await self._router.dispatch(repo, item)))
            except OperationOutcomeError as exc:
                results.append(_error_entry(exc))
        return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": results})

    async def _transaction(
        self,
        repo: Repository,
        request: FhirRequest,
        entries: list[Any],
        requests: list[FhirRequest | OperationOutcomeError],
    ) -> FhirResponse:
        for item in requests:
            if isinstance(item, OperationOutcomeError):
                raise item
        reqs: list[FhirRequest] = [r for r in requests if isinstance(r, FhirRequest)]
        ids = self._assign_ids(entries, reqs)
        order = sorted(range(len(reqs)), key=lambda i: _ORDER[reqs[i].method])
        results: list[dict[str, Any] | None] = [None] * len(reqs)
        resolved: dict[str, str] = {}  # conditional reference -> Type/id, while no entry writes that type
        async with repo.store.transaction() as tx:
            bound = repo.within(tx)
            for index in order:
                item = reqs[index]
                if not item.path:
                    raise bad_request("a Bundle entry cannot itself be a batch or transaction")
                _rewrite_references(item.body, ids)
                await self._resolve_conditional_references(bound, item, resolved)
                try:
                    response = await self._router.dispatch(bound, item)
                except OperationOutcomeError as exc:
                    exc.outcome.setdefault("issue", [{}])[0].setdefault("expression", [f"Bundle.entry[{index}]"])
                    raise
                _forget_written(resolved, item)
                full_url = entries[index].get("fullUrl")
                if item.method == "POST" and isinstance(full_url, str) and response.body:
                    ids[full_url] = f"{response.body.get('resourceType')}/{response.body.get('id')}"
                results[index] = _response_entry(response)
        return FhirResponse(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": results})

    def _assign_ids(self, entries: list[Any], reqs: list[FhirRequest]) -> dict[str, str]:
        """Server ids for the POSTed entries, so that references to their fullUrls can be rewritten."""
        ids: dict[str, str] = {}
        for item, req in zip(entries, reqs, strict=True):
            full_url = item.get("fullUrl")
            body = req.body
            if not isinstance(full_url, str) or not isinstance(body, dict):
                continue
            if req.method == "POST" and not req.header("if-none-exist"):
                new_id = str(uuid.uuid4())
                ids[full_url] = f"{body.get('resourceType')}/{new_id}"
                req.method, req.path = "PUT", [str(body.get("resourceType")), new_id]
                body["id"] = new_id
            elif req.method == "PUT" and len(req.path) == 2:
                ids[full_url] = f"{req.path[0]}/{req.path[1]}"
        return ids

    async def _resolve_conditional_references(
        self, repo: Repository, item: FhirRequest, resolved: dict[str, str] | None = None
    ) -> None:
        """References such as ``Practitioner?identifier=x|y`` become ``Practitioner/<id>`` (one match only).

        Resolving is a search by the caller: it needs search scope on the type (403 otherwise) and,
        under a patient/ scope, sees only the patient's own resources. A transaction passes ``resolved``, the
        references its entries resolved since the last write of their type (profiled: on a Synthea Bundle
        these searches were most of an entry's statements)."""
        for holder in _references(item.body):
            ref = holder["reference"]
            if "?" not in ref or ref.startswith(("http://", "https://", "urn:")):
                continue
            if resolved is not None and ref in resolved:
                holder["reference"] = resolved[ref]
                continue
            resource_type, _, query = ref.partition("?")
            matches = await repo.find(resource_type, parse_qsl(query, keep_blank_values=True), 2)
            if len(matches) != 1:
                found = "no" if not matches else "more than one"
                raise OperationOutcomeError.of(
                    412 if matches else 404,
                    "not-found" if not matches else "multiple-matches",
                    f"conditional reference {ref!r} matches {found} resource",
                )
            holder["reference"] = f"{resource_type}/{matches[0].version.id}"
            if resolved is not None:
                resolved[ref] = holder["reference"]


def _forget_written(resolved: dict[str, str], item: FhirRequest) -> None:
    """What an entry wrote may change what a conditional reference to its type finds; an operation may write
    anything."""
    if item.method == "GET":
        return
    if any(segment.startswith("$") for segment in item.path):
        resolved.clear()
    for ref in [r for r in resolved if r.partition("?")[0] == item.path[0]]:
        del resolved[ref]


def _references(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _rewrite_references(value: Any, ids: dict[str, str]) -> None:
    if not ids:
        return
    for holder in _references(value):
        target = ids.get(holder["reference"])
        if target is not None:
            holder["reference"] = target


def _response_entry(response: FhirResponse) -> dict[str, Any]:
    status = response.status
    if response.headers.get("Location") and status == 200:
        status = 201
    result: dict[str, Any] = {"status": _STATUS_TEXT.get(status, str(status))}
    for header, field in (("Location", "location"), ("ETag", "etag")):
        if header in response.headers:
            result[field] = response.headers[header]
    if "Last-Modified" in response.headers and response.body and isinstance(response.body.get("meta"), dict):
        result["lastModified"] = response.body["meta"].get("lastUpdated")
    item: dict[str, Any] = {"response": result}
    if response.body is not None:
        if response.body.get("resourceType") == "OperationOutcome":
            result["outcome"] = response.body
        else:
            item["resource"] = response.body
    if response.warnings and "outcome" not in result:  # bundle.html#transaction-response: the write's warnings
        result["outcome"] = {"resourceType": "OperationOutcome", "issue": list(response.warnings)}
    return item


def _error_entry(error: OperationOutcomeError) -> dict[str, Any]:
    return {"response": {"status": str(error.status), "outcome": error.outcome}}
