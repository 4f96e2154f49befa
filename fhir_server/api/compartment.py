"""The Patient compartment (compartmentdefinition.html): membership clauses and ``$everything``.

``$everything`` searches each compartment type the caller may search; the repository's policy
narrows each search (a patient/ scope sees its own patient's resources only)."""

from __future__ import annotations

from dataclasses import replace

from fhir_server.api.links import entry
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.definitions import patient_compartment, resource_types
from fhir_server.errors import OperationOutcomeError
from fhir_server.operation_definitions import operation_definition, parameter, returns
from fhir_server.repository import Repository, Stored
from fhir_server.storage.query import AnyClause, Clause, IdClause, ParamClause, ReferenceMatch
from fhir_server.validation import check_type

EVERYTHING_LIMIT = 5000


def compartment_clause(resource_type: str, patient_id: str) -> Clause | None:
    """Membership of the Patient compartment: any of the type's compartment parameters points at it."""
    params = patient_compartment().get(resource_type)
    if resource_type == "Patient":
        return IdClause((patient_id,))
    if not params:
        return None
    target = (ReferenceMatch("Patient", patient_id),)
    alternatives = tuple(ParamClause(p, "reference", target) for p in params if p != "{def}")
    return AnyClause(alternatives) if len(alternatives) != 1 else alternatives[0]


async def everything(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """patient-operation-everything.html: the patient and everything in its compartment."""
    assert id is not None
    patient = await repo.read("Patient", id)
    wanted = request.param("_type")
    served = resource_types()
    types = [t.strip() for t in wanted.split(",")] if wanted else sorted(set(patient_compartment()) & served)
    since = request.param("_since")
    found: list[Stored] = [patient]
    for member in types:
        check_type(member)
    for member in repo.searchable(types):
        clause = compartment_clause(member, id)
        if clause is None or member == "Patient":
            continue
        params = [("_count", str(EVERYTHING_LIMIT))] + ([("_lastUpdated", f"ge{since}")] if since else [])
        search = repo.parse((member,), params)
        search.query = replace(search.query, where=(clause, *search.query.where), total="none")
        found.extend(await repo.read_page(await repo.search(search)))
        if len(found) > EVERYTHING_LIMIT:
            raise OperationOutcomeError.of(
                400, "too-costly", f"more than {EVERYTHING_LIMIT} resources: narrow with _type or _since"
            )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": f"{request.base_url}/Patient/{id}/$everything"}],
        "entry": [entry(request.base_url, s, "match", s.resource) for s in found],
    }
    return FhirResponse(200, bundle)


EVERYTHING_DEFINITION = operation_definition(
    "everything",
    level="instance",
    resource=["Patient"],
    affects_state=False,
    name="everything",
    url="http://hl7.org/fhir/OperationDefinition/Patient-everything",
    description="The patient's record: every resource of its compartment the caller may read, in one Bundle.",
    parameters=[parameter("_since", "in", "instant"), parameter("_type", "in", "code", max="*"),
                returns("Bundle")],
)  # fmt: skip
