"""Purposes of use (consent.html#Consent.provision.purpose, R4 binding v3 PurposeOfUse): which
purposes, stated on a Consent, permit the AI analysis of a patient's images in this tenant.

A hospital's Consent names standard HL7 v3 ActReason purposes (``TREAT`` treatment, ``ETREAT``
emergency treatment, ``HOPERAT`` healthcare operations, ``HRESCH`` healthcare research...), not
DermBridge's own ``ai-analysis``. Each tenant says which of them cover the AI analysis; by default
``ai-analysis`` and ``TREAT`` (the analysis supports the patient's care), never research. Kept as a
tenant setting: ``dermbridge consent-purposes ...`` or ``POST $ai-purposes``, no restart.
"""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, values_of
from fhir_server.errors import bad_request
from fhir_server.operation_definitions import operation_definition, parameter
from fhir_server.repository import Repository
from fhir_server.security.admin import require_admin
from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting

Purpose = tuple[str, str]  # (system, code)

PURPOSE_SYSTEM = "urn:dermbridge:purpose-of-use"
AI_ANALYSIS: Purpose = (PURPOSE_SYSTEM, "ai-analysis")
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TREATMENT: Purpose = (V3_ACT_REASON, "TREAT")
RESEARCH: Purpose = (V3_ACT_REASON, "HRESCH")
DEFAULT_AI_PURPOSES: tuple[Purpose, ...] = (AI_ANALYSIS, TREATMENT)
SETTING = "consent.ai-purposes"
MAX_PURPOSES = 50


async def ai_purposes(reader: TenantReader) -> tuple[Purpose, ...]:
    """The purposes whose permit covers the AI analysis in this tenant."""
    found = await read_setting(reader, SETTING)
    if not isinstance(found, list):
        return DEFAULT_AI_PURPOSES
    return tuple((str(system), str(code)) for system, code in found)


async def purposes_covering(reader: TenantReader, purpose: Purpose) -> frozenset[Purpose]:
    """The purposes a provision may name to speak about ``purpose``: itself, and for the AI analysis
    every purpose the tenant maps to it."""
    if purpose == AI_ANALYSIS:
        return frozenset({AI_ANALYSIS, *await ai_purposes(reader)})
    return frozenset({purpose})


def parse_purpose(text: str) -> Purpose:
    """``system|code`` as a purpose."""
    system, bar, code = text.partition("|")
    if not bar or not code or not system or len(text) > 300:
        raise bad_request(f"{text!r} is not a purpose of use (system|code)", ["purpose"])
    return system, code


async def set_ai_purposes(store: TenantStore, purposes: list[Purpose] | None) -> tuple[Purpose, ...]:
    """Replace the tenant's AI purposes (None: back to the default); returns them."""
    if purposes is not None:
        if not purposes or len(purposes) > MAX_PURPOSES:
            raise bad_request(f"between 1 and {MAX_PURPOSES} purposes", ["purpose"])
        purposes = list(dict.fromkeys(purposes))
    await write_setting(store, SETTING, [list(p) for p in purposes] if purposes is not None else None)
    return await ai_purposes(store)


def _coding(value: Any) -> Purpose:
    if isinstance(value, str):
        return parse_purpose(value)
    if isinstance(value, dict) and isinstance(value.get("system"), str) and isinstance(value.get("code"), str):
        return value["system"], value["code"]
    raise bad_request("a purpose is a Coding with system and code", ["purpose"])


async def ai_purposes_operation(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
) -> FhirResponse:
    """``POST [base]/Consent/$ai-purposes``: with ``purpose`` codings (admin scope) they replace the
    tenant's list; with ``reset`` true the default comes back; without parameters it is answered."""
    given = named_values(request)
    wanted = [_coding(v) for v in values_of(given, "purpose")]
    reset = values_of(given, "reset") in ([True], ["true"])
    current = await ai_purposes(repo.store)
    if wanted or reset:
        require_admin(request.access, "changing the AI analysis purposes")
        current = await set_ai_purposes(repo.store, None if reset else wanted)
    output = [{"name": "purpose", "valueCoding": {"system": system, "code": code}} for system, code in current]
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": output})


AI_PURPOSES_DEFINITION = operation_definition(
    "ai-purposes",
    level="type",
    resource=["Consent"],
    description="The purposes of use (e.g. v3-ActReason TREAT) whose permit in a Consent covers the AI analysis "
    "of the patient's images in this tenant. Given purposes (admin scope) replace the list, reset restores the "
    "default (ai-analysis and TREAT); without parameters the list is answered.",
    parameters=[
        parameter("purpose", "in", "Coding", max="*"),
        parameter("reset", "in", "boolean"),
        parameter("purpose", "out", "Coding", min=1, max="*"),
    ],
)
