"""Test data in one place: resources, and the Synthea sample (copied into tests/data)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
SYNTHEA = DATA / "synthea"
# Referenced resources first, so that conditional references resolve.
SYNTHEA_ORDER = (
    "Organization", "Location", "Practitioner", "PractitionerRole", "Patient", "Encounter", "Condition",
    "AllergyIntolerance", "Immunization", "MedicationRequest", "Procedure", "Device", "DocumentReference",
)  # fmt: skip


def patient(family: str = "Doe", given: str = "Jane", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1970-05-02",
        **extra,
    }


def observation(subject: str, code: str = "8867-4", value: float = 72, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "Heart rate"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2024-03-01T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        **extra,
    }


def diagnostic_report(subject: str, status: str = "registered", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "72170-4", "display": "Photographic image"}]},
        "subject": {"reference": subject},
        **extra,
    }


def synthea_resources() -> Iterator[dict[str, Any]]:
    for resource_type in SYNTHEA_ORDER:
        with gzip.open(SYNTHEA / f"{resource_type}.000.ndjson.gz") as lines:
            for line in lines:
                yield json.loads(line)


def transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def set_enforcement(client: Any, base: str = "/fhir/default", **policy: str) -> dict[str, Any]:
    """The tenant's ``meta.profile`` policy (``StructureDefinition/$profile-enforcement``): ``known`` enforce|ignore,
    ``unknown`` refuse|accept; answers the policy in force."""
    body = {"resourceType": "Parameters", "parameter": [{"name": k, "valueCode": v} for k, v in policy.items()]}
    response = client.post(f"{base}/StructureDefinition/$profile-enforcement", json=body)
    assert response.status_code == 200, response.text
    return {p["name"]: p["valueCode"] for p in response.json()["parameter"]}
