"""The FHIR REST router: one FhirRequest in, one FhirResponse out (http.html#summary).

A route table maps method and path to a handler (``fhir_server.api.interactions``,
``fhir_server.api.searching``, operations); access decisions are the repository's, never the
router's. The FastAPI adapter and the batch/transaction processor both dispatch through it, so an
interaction behaves the same on its own and inside a Bundle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.api import interactions, searching
from fhir_server.api.compartment import EVERYTHING_DEFINITION, everything
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.operation_definitions import definition_reader
from fhir_server.api.routes import PathArgs, RouteTable
from fhir_server.errors import OperationOutcomeError, method_not_allowed, not_found
from fhir_server.repository import Repository
from fhir_server.security.scopes import Permission
from fhir_server.validation import check_type

OperationHandler = Callable[[Repository, FhirRequest, str | None, str | None], Awaitable[FhirResponse]]
CapabilityProvider = Callable[[str, str | None], dict[str, Any]]  # base URL, mode (capabilitystatement.html#mode)
WriteHook = Callable[[Repository, FhirRequest], Awaitable[None]]  # checks or completes a write's body
ReadFallback = Callable[[str], dict[str, Any] | None]  # id -> a shipped resource the tenant has not stored
WRITES = ("POST", "PUT", "PATCH")


@dataclass(frozen=True, slots=True)
class Operation:
    """A FHIR operation (``$name``) and the OperationDefinition that declares it."""

    name: str
    resource_types: tuple[str, ...]  # empty: system level
    instance: bool | None  # None: invoked on the type and on an instance alike (e.g. ValueSet/$expand)
    handler: OperationHandler
    definition: dict[str, Any]
    affects_state: bool = False
    permission: Permission = "r"  # what the token needs on the operation's resource type


class FhirRouter:
    def __init__(self, capability: CapabilityProvider) -> None:
        self._capability = capability
        self.operations: dict[str, Operation] = {}
        self.batch_handler: Callable[[Repository, FhirRequest], Awaitable[FhirResponse]] | None = None
        self.write_hooks: dict[str, WriteHook] = {}  # by resource type, e.g. Subscription activation
        self.read_fallbacks: dict[str, ReadFallback] = {}  # by resource type, e.g. shipped ValueSets
        self.register(Operation("everything", ("Patient",), True, everything, EVERYTHING_DEFINITION, False))
        self.routes = self._table()

    def register(self, operation: Operation) -> None:
        self.operations[operation.name] = operation

    def is_public(self, method: str, path: list[str]) -> bool:
        """Whether a request reads public conformance content, which needs no token: the CapabilityStatement
        (``metadata``) and the definitions of the registered operations (``OperationDefinition/{id}``), the
        canonicals the CapabilityStatement names. Configuration only, never patient or tenant data; any other
        read, of a stored OperationDefinition too, still needs a token."""
        if method not in ("GET", "HEAD"):
            return False
        if path == ["metadata"]:
            return True
        return (
            len(path) == 2
            and path[0] == "OperationDefinition"
            and any(op.definition["id"] == path[1] for op in self.operations.values())
        )

    async def dispatch(self, repo: Repository, request: FhirRequest) -> FhirResponse:
        handler, args = self.routes.match(request.method, request.path)
        if "type" in args:
            check_type(args["type"])
            hook = self.write_hooks.get(args["type"])
            if hook is not None and request.method in WRITES and "op" not in args and request.path[-1] != "_search":
                await hook(repo, request)
        return await handler(repo, request, args)

    def _table(self) -> RouteTable:
        table = RouteTable()
        table.add("POST", "", self._batch)
        table.add("GET", "", searching.search_system)
        table.add("GET", "metadata", self._metadata)
        table.add(
            "GET",
            "OperationDefinition/:id",
            definition_reader(lambda: (o.definition for o in self.operations.values())),
        )
        table.add("GET", "_history", searching.history)
        table.add("POST", "_search", searching.search_system)
        table.add("GET POST", "$op", self._operation)
        table.add("GET", ":type", searching.search_type)
        table.add("POST", ":type", interactions.create)
        table.add("PUT", ":type", interactions.conditional_update)
        table.add("DELETE", ":type", interactions.conditional_delete)
        table.add("POST", ":type/_search", searching.search_type)
        table.add("GET", ":type/_history", searching.history)
        table.add("GET POST", ":type/$op", self._operation)
        table.add("GET", ":type/:id", self._read)
        table.add("PUT", ":type/:id", interactions.update)
        table.add("PATCH", ":type/:id", interactions.patch)
        table.add("DELETE", ":type/:id", interactions.delete)
        table.add("GET POST", ":type/:id/$op", self._operation)
        table.add("GET", ":type/:id/_history", searching.history)
        table.add("GET", ":type/:id/_history/:vid", interactions.vread)
        table.add("GET", "Patient/:id/:compartment", self._compartment)
        return table

    async def _batch(self, repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
        if self.batch_handler is None:
            raise method_not_allowed("batch and transaction are not available")
        return await self.batch_handler(repo, request)

    async def _metadata(self, repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
        return FhirResponse(200, self._capability(request.base_url, request.param("mode")))

    async def _read(self, repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
        """http.html#read; a type with shipped read-only content (terminology) answers it when the tenant
        has no resource of that id, to a caller who may read the type."""
        try:
            return await interactions.read(repo, request, args)
        except OperationOutcomeError as error:
            fallback = self.read_fallbacks.get(args["type"])
            shipped = fallback(args["id"]) if fallback is not None and error.status == 404 else None
            if shipped is None:
                raise
            return FhirResponse(200, shipped)

    async def _compartment(self, repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
        return await searching.search_compartment(repo, request, {"id": args["id"], "type": args["compartment"]})

    async def _operation(self, repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
        """operations.html: the operation's own method rules, then its handler, for the caller it may serve."""
        name, resource_type, id = args["op"], args.get("type"), args.get("id")
        operation = self.operations.get(name)
        if operation is None or (operation.resource_types and resource_type not in operation.resource_types):
            raise not_found(f"operation ${name} is not supported here")
        if operation.instance is not None and operation.instance != (id is not None):
            raise not_found(f"operation ${name} is invoked on {'an instance' if operation.instance else 'a type'}")
        if operation.affects_state and request.method != "POST":
            raise method_not_allowed(f"${name} is invoked with POST")
        repo.authorize_operation(name, resource_type, id, operation.permission)
        return await operation.handler(repo, request, resource_type, id)
