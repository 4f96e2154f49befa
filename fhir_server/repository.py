"""The FHIR interactions over one tenant's store (http.html): create, read, vread, update, patch,
delete, their conditional forms, history and search.

Free of HTTP: the API layer and the batch/transaction processor both call it. Every write
validates (the R4 schema, then the base specification's terminology bindings: ``binding_checks``),
assigns ``id``/``meta.versionId``/``meta.lastUpdated``, extracts the search index and appends a
``resource.*`` outbox event in the same transaction.

Every interaction asks the repository's ``AccessPolicy`` first (``fhir_server.security.policy``):
a repository is made either for a token's policy or, by ``Repository.system(store, reason=...)``,
as the named privileged context of an internal caller. Under a ``patient/`` scope, another
patient's resource, live or deleted, is answered as if it did not exist (404).

Every deletion (DELETE, conditional DELETE, bundle entries, ``$erase``, retention) ends in ``_tombstone``,
which refuses with 409 what an active legal hold covers (``fhir_server.retention.holds``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_server.binding_checks import binding_issues, terminology_written
from fhir_server.definitions import resource_types
from fhir_server.errors import (
    OperationOutcomeError,
    bad_request,
    conflict,
    forbidden,
    gone,
    method_not_allowed,
    not_found,
    precondition_failed,
)
from fhir_server.limits import MAX_VERSION_DIGITS, whole_number
from fhir_server.managed_content import check_client_write
from fhir_server.patches import apply_patch
from fhir_server.retention.holds import check_deletable
from fhir_server.search.extract import index_resource, parse_local_reference
from fhir_server.search.request import SearchRequest, TerminologyCodes, parse_search
from fhir_server.security.policy import AccessPolicy, Decision
from fhir_server.security.scopes import Permission
from fhir_server.storage.port import (
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    ResourceKey,
    ResourceVersion,
    SearchPage,
    TenantReader,
    TenantStore,
    TenantTransaction,
)
from fhir_server.storage.query import SearchQuery
from fhir_server.validation import check_type, validate
from fhir_server.write_guards import check_content, check_guarded_write

APPEND_ONLY = "AuditEvent"
HISTORY_BATCH = 500
MAX_OWNED_HISTORY = 10_000  # versions of one resource filtered for a patient/ scope: far above any real count
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def new_instant() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_id(id: str) -> None:
    if not ID_PATTERN.match(id):
        raise bad_request(f"{id!r} is not a valid FHIR id ([A-Za-z0-9-.], 1 to 64 characters)", ["id"])


@dataclass(frozen=True, slots=True)
class Stored:
    """A resource as the client sees it, with the version it came from."""

    resource: dict[str, Any]
    version: ResourceVersion
    created: bool = False
    issues: tuple[dict[str, Any], ...] = ()  # warnings of the write (binding checks), for the response

    @property
    def etag(self) -> str:
        return f'W/"{self.version.version}"'


def load(version: ResourceVersion) -> dict[str, Any]:
    assert version.content is not None
    resource: dict[str, Any] = orjson.loads(version.content)
    return resource


def parse_etag(value: str) -> int:
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    number = whole_number(text.strip('"'), "If-Match", MAX_VERSION_DIGITS)
    if number is None:
        raise bad_request(f'{value[:100]!r} is not a version ETag such as W/"3"')
    return number


class Repository:
    """One tenant's resources as one caller may see them (``policy``).

    Bound to a transaction by ``within(tx)`` for batch/transaction bundles."""

    def __init__(
        self,
        store: TenantStore,
        policy: AccessPolicy,
        *,
        local_base: str | None = None,
        default_count: int = 20,
        max_count: int = 1000,
        tx: TenantTransaction | None = None,
    ) -> None:
        if not isinstance(policy, AccessPolicy):
            raise TypeError("a Repository needs an AccessPolicy; internal callers use Repository.system(...)")
        self.store = store
        self.policy = policy
        self.tenant = store.name
        self.local_base = local_base
        self.default_count = default_count
        self.max_count = max_count
        self._tx = tx

    @classmethod
    def system(
        cls, store: TenantStore, *, reason: str, local_base: str | None = None, tx: TenantTransaction | None = None
    ) -> Repository:
        """The privileged context of an internal caller (Medplum's ``getSystemRepo``), named by ``reason``."""
        return cls(store, AccessPolicy.system(reason), local_base=local_base, tx=tx)

    def within(self, tx: TenantTransaction) -> Repository:
        return Repository(
            self.store,
            self.policy,
            local_base=self.local_base,
            default_count=self.default_count,
            max_count=self.max_count,
            tx=tx,
        )

    @property
    def transaction(self) -> TenantTransaction | None:
        """The transaction this repository is bound to (``within``), if any."""
        return self._tx

    @property
    def _reader(self) -> TenantReader:
        return self._tx if self._tx is not None else self.store

    # -- reads --------------------------------------------------------------------------------
    async def current(self, resource_type: str, id: str) -> dict[str, Any] | None:
        """The live resource, or None when absent, deleted or not the caller's to read (no 404/410)."""
        decision = self.policy.decide(resource_type, "r")
        version = await self._reader.read(resource_type, id) if decision != "none" else None
        if version is None or version.deleted or not await self._owned(decision, version):
            return None
        return load(version)

    async def read(self, resource_type: str, id: str) -> Stored:
        """http.html#read: 404 when it never existed (or is not the caller's), 410 when deleted."""
        check_type(resource_type)
        decision = self.policy.require(resource_type, "r")
        version = await self._reader.read(resource_type, id)
        if version is None or not await self._owned(decision, version):
            raise not_found(f"{resource_type}/{id} is not known")
        if version.deleted:
            raise _gone(version)
        return Stored(load(version), version)

    async def vread(self, resource_type: str, id: str, version_id: str) -> Stored:
        """http.html#vread"""
        check_type(resource_type)
        decision = self.policy.require(resource_type, "r")
        number = whole_number(version_id, "_history", MAX_VERSION_DIGITS)
        if number is None:
            raise not_found(f"{resource_type}/{id} has no version {version_id!r}")
        version = await self.store.vread(resource_type, id, number)
        if version is None:
            raise not_found(f"{resource_type}/{id} has no version {version_id}")
        if decision == "patient":  # both the version asked for and the resource now must be the patient's
            current = await self._reader.read(resource_type, id)
            if not (await self._owned(decision, version) and await self._owned(decision, current)):
                raise not_found(f"{resource_type}/{id} has no version {version_id}")
        if version.deleted:
            raise _gone(version)
        return Stored(load(version), version)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """http.html#history: a patient/ scope reads the history of one resource of its patient only."""
        types = (query.resource_type,) if query.resource_type is not None else tuple(sorted(resource_types()))
        for resource_type in types:
            check_type(resource_type)
        decisions = {t: self.policy.require(t, "r") for t in types}
        if query.id is None and "patient" in decisions.values():
            raise forbidden("a patient/ scope reads the history of one resource, not of a type")
        if query.id is not None and query.resource_type is not None:
            current = await self.store.read(query.resource_type, query.id)
            if current is None or not await self._owned(decisions[query.resource_type], current):
                raise not_found(f"{query.resource_type}/{query.id} is not known")
        if "patient" in decisions.values():
            return await self._owned_history(query)
        return await self.store.history(query)

    async def _owned_history(self, query: HistoryQuery) -> HistoryPage:
        """One resource's history as a patient/ scope may read it: only the versions its patient owns
        (a deletion: as the version it deleted), as ``vread`` answers them; the total counts those."""
        visible: list[ResourceVersion] = []
        offset = 0
        while True:
            page = await self.store.history(replace(query, count=HISTORY_BATCH, offset=offset))
            visible += [v for v in page.versions if await self._owned("patient", v)]
            offset += len(page.versions)
            if not page.versions or offset >= page.total or offset >= MAX_OWNED_HISTORY:
                break
        return HistoryPage(visible[query.offset : query.offset + query.count], len(visible))

    def parse(
        self,
        resource_types: tuple[str, ...],
        params: list[tuple[str, str]],
        *,
        lenient: bool = False,
        codes: TerminologyCodes | None = None,
    ) -> SearchRequest:
        for resource_type in resource_types:
            check_type(resource_type)
        return parse_search(
            resource_types,
            params,
            lenient=lenient,
            default_count=self.default_count,
            max_count=self.max_count,
            local_base=self.local_base,
            codes=codes,
        )

    def searchable(self, types: Sequence[str]) -> tuple[str, ...]:
        """Those of ``types`` the caller may search (a search of every type covers these). Under a
        patient/ scope a type no patient owns (e.g. Appointment) is not searchable: it is left out."""
        return tuple(t for t in types if self.policy.can_search(t))

    def may(self, resource_type: str, permission: Permission) -> bool:
        """Whether the caller holds ``permission`` on ``resource_type`` at all (whole or patient-bounded)."""
        return self.policy.can(resource_type, permission)

    async def search(self, request: SearchRequest) -> SearchPage:
        """search.html, as the policy bounds it: search scope on every type named or crossed (chains,
        ``_has``), and under patient/ scopes only the patient's own resources."""
        return await self._reader.search(self.policy.bound(request.query))

    async def find(self, resource_type: str, criteria: list[tuple[str, str]], count: int = 1) -> list[Stored]:
        """The first ``count`` matches of a search, read in one call (no total, no paging links)."""
        request = self.parse((resource_type,), criteria)
        query = replace(self.policy.bound(request.query), count=count, offset=0, total="none")
        return [Stored(load(v), v) for v in await self._reader.search_versions(query)]

    async def read_page(self, page: SearchPage) -> list[Stored]:
        """The resources of a page ``search`` answered (already bounded by the policy)."""
        versions = await self._reader.read_many(page.keys)
        return [Stored(load(v), v) for v in versions]

    async def read_visible(self, keys: Sequence[ResourceKey]) -> list[Stored]:
        """Those of ``keys`` the caller may read, the others left out silently (``_include``)."""
        wanted = [k for k in keys if self.policy.can(k.resource_type, "r")]
        found = [Stored(load(v), v) for v in await self._reader.read_many(wanted)]
        return [s for s in found if self.policy.may(s.resource)]

    async def search_visible(self, query: SearchQuery) -> list[Stored]:
        """A search whose results are added, not asked for (``_revinclude``): what the caller may not
        read is left out rather than refused."""
        bounded = self.policy.bound_or_none(query, "r")
        if bounded is None:
            return []
        page = await self._reader.search(bounded)
        return [s for s in await self.read_page(page) if self.policy.may(s.resource)]

    def authorize_operation(self, name: str, resource_type: str | None, id: str | None, permission: Permission) -> None:
        """An operation (``$name``) needs ``permission`` on its type (``*`` at system level); under a
        patient/ scope only on the patient's own Patient instance, and never one that deletes (``$erase``)."""
        decision = self.policy.require(resource_type or "*", permission)
        if decision == "patient" and permission == "d":
            raise forbidden(
                f"${name} needs a user/ or system/ scope: a patient's own erasure request goes through the organisation"
            )
        if decision == "patient" and (resource_type, id) != ("Patient", self.policy.patient):
            raise forbidden(f"${name} needs a user/ or system/ scope here")

    async def _owned(self, decision: Decision, version: ResourceVersion | None) -> bool:
        """Whether a patient-bounded caller may know of ``version``: the patient owns its content, or,
        for a deletion, the content it deleted; a Binary is owned as its ``securityContext`` is
        (binary.html#security)."""
        if decision == "all":
            return True
        if version is None:
            return False
        content = version
        if version.deleted and version.version > 1:
            content = await self.store.vread(version.resource_type, version.id, version.version - 1) or version
        if content.content is None:
            return False
        resource: dict[str, Any] | None = load(content)
        if version.resource_type == "Binary":
            resource = await self._security_context(resource or {})
        return resource is not None and self.policy.owns(resource)

    async def _security_context(self, binary: dict[str, Any]) -> dict[str, Any] | None:
        """The live resource a Binary's ``securityContext`` names (not another Binary), if any."""
        context = binary.get("securityContext")
        reference = context.get("reference") if isinstance(context, dict) else None
        target = parse_local_reference(reference) if isinstance(reference, str) else None
        if target is None or target[0] == "Binary":
            return None
        version = await self._reader.read(*target)
        return None if version is None or version.deleted else load(version)

    # -- writes -------------------------------------------------------------------------------
    async def create(
        self, resource: Any, *, resource_type: str, if_none_exist: str | None = None, server_built: bool = False
    ) -> Stored:
        """http.html#create; with ``If-None-Exist`` the conditional create (http.html#ccreate).

        The match of ``If-None-Exist`` is returned to the caller, so it needs read and search scope,
        and under a patient/ scope it sees only the patient's own resources: another patient's
        resource is no match (a new resource is created, owned by the caller's patient)."""
        check_type(resource_type)
        self.policy.require(resource_type, "c")
        if if_none_exist is not None:
            self.policy.require(resource_type, "s")
            self.policy.require(resource_type, "r")
        validate(resource, resource_type, server_built=server_built)
        self.policy.check_write(resource_type, resource, "c")
        issues = await binding_issues(self.store, resource_type, resource)
        async with self._transaction() as repo:
            if if_none_exist is not None:
                existing = await repo._conditional_match(resource_type, if_none_exist, "If-None-Exist")
                if existing is not None:
                    return existing
            return replace(await repo._put(resource_type, str(uuid.uuid4()), resource, None, "POST"), issues=issues)

    @staticmethod
    def _append_only(resource_type: str) -> None:
        if resource_type == APPEND_ONLY:
            raise method_not_allowed("AuditEvents are append-only: they cannot be updated, patched or deleted")

    async def update(
        self,
        resource: Any,
        *,
        resource_type: str,
        id: str,
        if_match: str | None = None,
        server_built: bool = False,
    ) -> Stored:
        """http.html#update, including update-as-create with a client-chosen id.

        Under a patient/ scope the resource, if it exists or existed, must be the patient's (404
        otherwise: a deleted resource of another patient is not taken over) and stay the patient's."""
        check_type(resource_type)
        self._append_only(resource_type)
        decision = self.policy.require(resource_type, "u")
        check_id(id)
        validate(resource, resource_type, server_built=server_built)
        body_id = resource.get("id")
        if body_id is None:
            raise bad_request("the resource must carry its id on update", ["id"])
        if body_id != id:
            raise bad_request(f"the body's id {body_id!r} differs from the URL's {id!r}", ["id"])
        self.policy.check_write(resource_type, resource, "u")
        issues = await binding_issues(self.store, resource_type, resource)
        index = index_resource({**resource, "resourceType": resource_type, "id": id}, self.local_base)
        async with self._transaction() as repo:  # the index is computed before taking the write lock
            current = await repo._reader.read(resource_type, id)
            if current is not None and not await repo._owned(decision, current):
                raise not_found(f"{resource_type}/{id} is not known")
            repo._check_if_match(current, if_match)
            return replace(await repo._put(resource_type, id, resource, current, "PUT", index), issues=issues)

    async def conditional_update(
        self, resource: Any, *, resource_type: str, criteria: str, if_match: str | None = None
    ) -> Stored:
        """http.html#cond-update: update scope, and search scope for the match."""
        check_type(resource_type)
        self._append_only(resource_type)
        self._conditional_write(resource_type, "u")
        validate(resource, resource_type)
        issues = await binding_issues(self.store, resource_type, resource)
        async with self._transaction() as repo:
            matches = await repo._matches(resource_type, criteria, "conditional update")
            if len(matches) > 1:
                raise precondition_failed(f"{len(matches)} resources match {criteria!r}: be more selective")
            if not matches:
                id = resource.get("id") or str(uuid.uuid4())
                check_id(id)
                if await repo._reader.read(resource_type, id) is not None:
                    raise conflict(f"{resource_type}/{id} exists but does not match {criteria!r}")
                return replace(await repo._put(resource_type, id, resource, None, "PUT"), issues=issues)
            current = matches[0]
            if resource.get("id") not in (None, current.id):
                raise bad_request(f"the body's id differs from the matched {resource_type}/{current.id}", ["id"])
            repo._check_if_match(current, if_match)
            return replace(await repo._put(resource_type, current.id, resource, current, "PUT"), issues=issues)

    async def patch(
        self, patch: Any, *, resource_type: str, id: str, if_match: str | None = None, content_type: str | None = None
    ) -> Stored:
        """http.html#patch with a JSON Patch (RFC 6902) or JSON merge patch (RFC 7386) document."""
        check_type(resource_type)
        self._append_only(resource_type)
        decision = self.policy.require(resource_type, "u")
        async with self._transaction() as repo:
            current = await repo._reader.read(resource_type, id)
            if current is None or not await repo._owned(decision, current):
                raise not_found(f"{resource_type}/{id} is not known")
            if current.deleted:
                raise _gone(current)
            repo._check_if_match(current, if_match)
            patched = apply_patch(load(current), patch, content_type)
            if patched.get("id") != id or patched.get("resourceType") != resource_type:
                raise OperationOutcomeError.of(422, "processing", "a patch may not change resourceType or id")
            validate(patched, resource_type)
            self.policy.check_write(resource_type, patched, "u")
            issues = await binding_issues(self.store, resource_type, patched)
            return replace(await repo._put(resource_type, id, patched, current, "PATCH"), issues=issues)

    async def delete(self, resource_type: str, id: str, *, if_match: str | None = None) -> ResourceVersion | None:
        """http.html#delete: a versioned tombstone. Deleting a deleted or unknown resource succeeds."""
        check_type(resource_type)
        self._append_only(resource_type)
        decision = self.policy.require(resource_type, "d")
        async with self._transaction() as repo:
            current = await repo._reader.read(resource_type, id)
            if current is not None and not await repo._owned(decision, current):
                raise not_found(f"{resource_type}/{id} is not known")
            repo._check_if_match(current, if_match)
            if current is None or current.deleted:
                return None
            return await repo._tombstone(current)

    async def conditional_delete(self, resource_type: str, criteria: str, *, multiple: bool = True) -> int:
        """http.html#cdelete: deletes every match (several allowed unless ``multiple`` is False)."""
        check_type(resource_type)
        self._append_only(resource_type)
        self._conditional_write(resource_type, "d")
        async with self._transaction() as repo:
            matches = await repo._matches(resource_type, criteria, "conditional delete", self.max_count)
            if len(matches) > 1 and not multiple:
                raise precondition_failed(f"{len(matches)} resources match {criteria!r}")
            for current in matches:
                await repo._tombstone(current)
            return len(matches)

    # -- internals ----------------------------------------------------------------------------
    def _transaction(self) -> _TransactionScope:
        return _TransactionScope(self)

    def _conditional_write(self, resource_type: str, permission: Permission) -> None:
        """Conditional update and delete: ``permission`` and search on the type, a user/ or system/ one:
        a patient/ scope would learn through 412/409 of matches outside its patient's record."""
        decisions = {self.policy.require(resource_type, permission), self.policy.require(resource_type, "s")}
        if "patient" in decisions:
            raise forbidden("conditional update and delete need a user/ or system/ scope")

    def _check_if_match(self, current: ResourceVersion | None, if_match: str | None) -> None:
        if if_match is None:
            return
        expected = parse_etag(if_match)
        if current is None or current.deleted or current.version != expected:
            have = "none" if current is None or current.deleted else str(current.version)
            raise precondition_failed(f"If-Match {if_match} does not match the current version ({have})")

    async def _matches(self, resource_type: str, criteria: str, what: str, limit: int = 2) -> list[ResourceVersion]:
        from urllib.parse import parse_qsl

        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if not params:
            raise bad_request(f"{what} needs search criteria")
        request = self.parse((resource_type,), params)
        query = replace(self.policy.bound(request.query), count=limit, offset=0, total="none", sort=())
        page = await self._reader.search(query)
        return await self._reader.read_many(page.keys)

    async def _conditional_match(self, resource_type: str, criteria: str, header: str) -> Stored | None:
        matches = await self._matches(resource_type, criteria, header)
        if len(matches) > 1:
            raise precondition_failed(f"{header}: {len(matches)} resources match {criteria!r}")
        if matches:
            return Stored(load(matches[0]), matches[0], created=False)
        return None

    async def _put(
        self,
        resource_type: str,
        id: str,
        resource: dict[str, Any],
        current: ResourceVersion | None,
        method: str,
        index: IndexEntries | None = None,
    ) -> Stored:
        assert self._tx is not None
        if self.policy.access is not None:
            check_client_write(resource_type, resource, _content(current))
            await check_guarded_write(self._tx, self.policy, resource_type, resource, _content(current))
            await check_content(self, resource_type, resource)
        version_number = current.version + 1 if current is not None else 1
        now = new_instant()
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version_number)
        meta["lastUpdated"] = now
        body = {"resourceType": resource_type, "id": id, "meta": meta}
        body.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
        content = orjson.dumps(body)
        version = ResourceVersion(resource_type, id, version_number, now, content, method)
        await self._tx.write(version, index if index is not None else index_resource(body, self.local_base))
        terminology_written(self.tenant, resource_type)
        created = current is None or current.deleted
        if resource_type == APPEND_ONLY:  # the audit trail's own writes are not events of the clinical store
            await self._tx.chain_audit(id, content)
            return Stored(body, version, created=created)
        await self._tx.append_event(
            "resource.created" if created else "resource.updated",
            {"tenant": self.tenant, "type": resource_type, "id": id, "version": version_number},
        )
        return Stored(body, version, created=created)

    async def _tombstone(self, current: ResourceVersion) -> ResourceVersion:
        """Every deletion passes here: a legal hold on the resource's patient or case refuses it (409)."""
        assert self._tx is not None
        await check_deletable(self._tx, current, self.policy.may)
        if self.policy.access is not None:
            check_client_write(current.resource_type, None, _content(current))
        version = ResourceVersion(current.resource_type, current.id, current.version + 1, new_instant(), None, "DELETE")
        await self._tx.write(version, None)
        terminology_written(self.tenant, current.resource_type)
        await self._tx.append_event(
            "resource.deleted",
            {"tenant": self.tenant, "type": current.resource_type, "id": current.id, "version": version.version},
        )
        return version


def _content(current: ResourceVersion | None) -> dict[str, Any] | None:
    return load(current) if current is not None and not current.deleted else None


def _gone(version: ResourceVersion) -> OperationOutcomeError:
    error = gone(f"{version.resource_type}/{version.id} was deleted")
    error.headers["ETag"] = f'W/"{version.version}"'
    return error


class _TransactionScope:
    """``async with repo._transaction() as r``: r is bound to the current or a new transaction."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._cm: Any = None

    async def __aenter__(self) -> Repository:
        if self._repo._tx is not None:
            return self._repo
        self._cm = self._repo.store.transaction()
        tx = await self._cm.__aenter__()
        return self._repo.within(tx)

    async def __aexit__(self, *exc: Any) -> bool | None:
        if self._cm is None:
            return None
        result: bool | None = await self._cm.__aexit__(*exc)
        return result
