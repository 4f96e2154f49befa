"""The tenant's mapping from an assigning authority's name (DICOM IssuerOfPatientID, HL7 v2 CX.4)
to the FHIR identifier system its patient ids belong to (datatypes.html#Identifier): a device that
sends ``CLINIC-MRN`` names the EHR's ``urn:clinic:mrn``.

Kept as a tenant setting, so a change through ``dermbridge issuer ...`` or ``$issuer-systems``
applies to the next image without a restart. ``POST $issuer-systems`` with an ``issuer`` sets (or
with no ``system`` removes) its entry, with an admin scope; with no parameters it answers the mapping.
"""

from __future__ import annotations

import re

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, one_of
from fhir_server.errors import bad_request
from fhir_server.operation_definitions import operation_definition, parameter
from fhir_server.repository import Repository
from fhir_server.security.admin import require_admin
from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting

SETTING = "patient.issuer-systems"
MAX_ISSUERS = 500
ISSUER = re.compile(r"^[^\\\x00-\x1f]{1,64}$")  # a DICOM LO value: 64 characters, no backslash or controls
SYSTEM = re.compile(r"^(urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+|https?://\S+)$")


def check_issuer(issuer: str) -> str:
    text = issuer.strip()
    if not ISSUER.match(text):
        raise bad_request(f"{issuer!r} is not an issuer name (1 to 64 characters, no backslash)", ["issuer"])
    return text


def check_system(system: str) -> str:
    if len(system) > 255 or not SYSTEM.match(system):
        raise bad_request(f"{system!r} is not an identifier system (an absolute URI: urn:... or http(s)://...)",
                          ["system"])  # fmt: skip
    return system


async def issuer_systems(reader: TenantReader) -> dict[str, str]:
    """The tenant's mapping, issuer name -> identifier system."""
    found = await read_setting(reader, SETTING)
    return dict(found) if isinstance(found, dict) else {}


async def set_issuer_system(store: TenantStore, issuer: str, system: str | None) -> dict[str, str]:
    """Map ``issuer`` to ``system`` (None: remove the entry); returns the new mapping."""
    issuer = check_issuer(issuer)
    mapping = await issuer_systems(store)
    if system is None:
        mapping.pop(issuer, None)
    else:
        mapping[issuer] = check_system(system)
        if len(mapping) > MAX_ISSUERS:
            raise bad_request(f"a tenant maps at most {MAX_ISSUERS} issuers", ["issuer"])
    await write_setting(store, SETTING, dict(sorted(mapping.items())) or None)
    return mapping


def _answer(mapping: dict[str, str]) -> FhirResponse:
    entries = [{"name": "mapping", "part": [{"name": "issuer", "valueString": issuer},
                                            {"name": "system", "valueUri": system}]}
               for issuer, system in sorted(mapping.items())]  # fmt: skip
    return FhirResponse(200, {"resourceType": "Parameters", **({"parameter": entries} if entries else {})})


async def issuer_systems_operation(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
) -> FhirResponse:
    """``POST [base]/$issuer-systems``"""
    given = named_values(request)
    issuer, system = one_of(given, "issuer"), one_of(given, "system")
    if issuer is None and system is None:
        return _answer(await issuer_systems(repo.store))
    require_admin(request.access, "changing the issuer mapping")
    if not isinstance(issuer, str):
        raise bad_request("$issuer-systems needs an issuer (valueString)", ["issuer"])
    if system is not None and not isinstance(system, str):
        raise bad_request("system is a valueUri", ["system"])
    return _answer(await set_issuer_system(repo.store, issuer, system))


ISSUER_SYSTEMS_DEFINITION = operation_definition(
    "issuer-systems",
    level="system",
    description="The tenant's mapping from an assigning authority's name (DICOM IssuerOfPatientID) to the "
    "identifier system of its patient ids. With an issuer (admin scope) it maps the issuer, or removes its "
    "entry when no system is given; without parameters it answers the mapping. Effective for the next image, "
    "without a restart.",
    parameters=[
        parameter("issuer", "in", "string"),
        parameter("system", "in", "uri"),
        parameter("mapping", "out", max="*",
                  part=[parameter("issuer", "out", "string", min=1), parameter("system", "out", "uri", min=1)]),
    ],
)  # fmt: skip
