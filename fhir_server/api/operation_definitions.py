"""``GET OperationDefinition/{id}`` for the server's own operations (operations.html#defining): the
CapabilityStatement's ``operation.definition`` canonicals resolve here; other ids read the tenant's store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhir_server.api import interactions
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.routes import Handler, PathArgs
from fhir_server.operation_definitions import served
from fhir_server.repository import Repository


def definition_reader(definitions: Callable[[], Iterable[dict[str, Any]]]) -> Handler:
    """A read handler answering the registered definition of that id, else the stored resource."""

    async def read(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
        for definition in definitions():
            if definition["id"] == args["id"]:
                return FhirResponse(200, served(definition))
        return await interactions.read(repo, request, {"type": "OperationDefinition", "id": args["id"]})

    return read
