"""A small constructed cohort whose figures are computed by hand: lesions a model analysed, their
histopathology (sent as pathology DiagnosticReports), clinicians' diagnoses and the patients' skin types."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from fhir_server.repository import Repository
from tests.conftest import BASE, FhirTestClient

SNOMED = "http://snomed.info/sct"
MELANOMA = {"system": SNOMED, "code": "93655004", "display": "Malignant melanoma of skin"}
NAEVUS = {"system": SNOMED, "code": "400096001", "display": "Melanocytic nevus"}
TRUNK = {"system": SNOMED, "code": "66643007", "display": "Skin of back"}  # CID 4029
FACE = {"system": SNOMED, "code": "36141000", "display": "Skin of cheek"}  # CID 4029
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
FITZPATRICK = {"I": "C74569", "V": "C74573"}  # DICOM CID 4401
CARD_EXTENSION = "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/aitransparency.modelCardDescription"
WHEN = (datetime.now(UTC) - timedelta(days=20)).replace(microsecond=0)


@dataclass(frozen=True)
class Lesion:
    histology: dict[str, str] | None  # the pathologist's diagnosis
    ai_melanoma: bool  # the melanoma class at or above its threshold
    clinician: dict[str, str] | None = None
    skin: str | None = None  # Fitzpatrick type
    face: bool = False  # else the back
    born: str = "1970-05-02"
    confirmed: bool = False  # the clinician's diagnosis is a confirm of the AI's call (else an override)


# melanoma against histology: TP 4, FN 1, FP 2, TN 5; the clinician against histology: TP 1, FP 1;
# without histology, the AI against the clinician: TP 1, FN 1, TN 1. Two clinician reads confirm the AI.
COHORT = [
    Lesion(MELANOMA, True, MELANOMA, skin="V", confirmed=True),
    Lesion(MELANOMA, True, skin="V"),
    Lesion(MELANOMA, True, skin="V", face=True),
    Lesion(MELANOMA, True, skin="I"),
    Lesion(MELANOMA, False, skin="I", born="1940-01-01"),
    Lesion(NAEVUS, True, MELANOMA, skin="V"),
    Lesion(NAEVUS, True, skin="V"),
    Lesion(NAEVUS, False, skin="V"),
    Lesion(NAEVUS, False, skin="I"),
    Lesion(NAEVUS, False),
    Lesion(NAEVUS, False),
    Lesion(NAEVUS, False, born="1940-01-01"),
    Lesion(None, True, MELANOMA, confirmed=True),
    Lesion(None, False, MELANOMA),
    Lesion(None, False, NAEVUS),
]


def model_card(performance: list[dict[str, Any]]) -> dict[str, Any]:
    """An AI Model-Card DocumentReference whose JSON attachment is the card (as inference.governance writes)."""
    card = {"id": "test-model", "version": "1.0", "performance": performance}
    data = base64.b64encode(json.dumps(card).encode()).decode()
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/json", "data": data}}],
    }


class Cohort:
    idp: Any = None  # the identity provider the test's server trusts (tests.fhir_server.security.smart)

    def __init__(self, client: FhirTestClient, performance: list[dict[str, Any]] | None = None) -> None:
        self.client = client
        card = self.post("DocumentReference", model_card(performance or []))
        self.device = self.post(
            "Device",
            {
                "resourceType": "Device",
                "identifier": [{"system": "urn:dermbridge:model", "value": "test-model@1.0"}],
                "deviceName": [{"name": "Test model", "type": "model-name"}],
                "version": [{"value": "1.0"}],
                "extension": [{"url": CARD_EXTENSION, "valueReference": {"reference": f"DocumentReference/{card}"}}],
            },
        )
        self.pathologist = self.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": "Dr Path"}]})
        self.reviewer = self.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": "Dr Derm"}]})
        self.lesions: list[str] = []
        self.patients: list[str] = []
        for index, lesion in enumerate(COHORT):
            self.add(index, lesion)

    def post(self, resource_type: str, resource: dict[str, Any]) -> str:
        response = self.client.post(f"{BASE}/{resource_type}", json=resource)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def add(self, index: int, lesion: Lesion) -> None:
        patient = self.post("Patient", {"resourceType": "Patient", "birthDate": lesion.born})
        subject = {"reference": f"Patient/{patient}"}
        if lesion.skin:
            self.post(
                "Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "subject": subject,
                    "code": {"coding": [{"system": "http://loinc.org", "code": "66555-4"}]},
                    "valueCodeableConcept": {"coding": [{"system": NCIT, "code": FITZPATRICK[lesion.skin]}]},
                },
            )
        body = self.post(
            "BodyStructure",
            {
                "resourceType": "BodyStructure",
                "patient": subject,
                "location": {"coding": [FACE if lesion.face else TRUNK]},
            },
        )
        when = (WHEN + timedelta(hours=index)).isoformat()
        ai = server_write(self.client, ai_result(subject, body, self.device, lesion.ai_melanoma, when))
        if lesion.clinician:
            decision = review_decision(
                subject, body, f"Practitioner/{self.reviewer}", lesion.clinician, ai if lesion.confirmed else None
            )
            server_write(self.client, decision)
        if lesion.histology:
            self.post(
                "DiagnosticReport",
                pathology(subject, f"BodyStructure/{body}", lesion.histology, f"Practitioner/{self.pathologist}"),
            )
        self.lesions.append(body)
        self.patients.append(patient)

    def linked(self) -> None:
        """Runs the outbox consumers until every pathology report has its ground truth (bounded)."""
        dispatcher = self.client.app.state.dispatcher  # type: ignore[attr-defined]
        for _ in range(50):
            found = self.client.get(
                f"{BASE}/Observation",
                params={"code": "urn:dermbridge:outcome|histology-ground-truth", "_total": "accurate"},
            ).json()
            if found["total"] >= sum(1 for lesion in COHORT if lesion.histology):
                return
            self.client.portal.call(dispatcher.drain)
        raise AssertionError("the ground truth was not written")

    def performance(self, **params: Any) -> Any:
        query = {"model": f"Device/{self.device}", "from": (WHEN - timedelta(days=1)).date().isoformat(), **params}
        return self.client.get(f"{BASE}/$ai-performance", params=query)


def server_write(client: FhirTestClient, observation: dict[str, Any]) -> str:
    """An Observation only the server writes (an AI result, a review decision), written as the inference worker
    and ``$complete`` do: through a system repository (clients are refused: fhir_server.outcomes.sources)."""
    app = client.app
    store = client.portal.call(app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    repo = Repository.system(store, reason="test: what the server writes")
    stored = client.portal.call(partial(repo.create, observation, resource_type="Observation", server_built=True))
    return str(stored.resource["id"])


def review_decision(
    subject: dict[str, str], lesion: str, reviewer: str, diagnosis: dict[str, str], ai: str | None = None
) -> dict[str, Any]:
    """A clinician's diagnosis as ``$complete`` writes it (fhir_server.workflow.review.decision): an override,
    or with ``ai`` (the AI Observation copied) a confirmation."""
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "subject": subject,
        "code": {"coding": [{"system": SNOMED, "code": "439401001"}]},
        "focus": [{"reference": f"BodyStructure/{lesion}"}],
        "performer": [{"reference": reviewer}],
        "method": {"coding": [{"system": "urn:dermbridge:method", "code": "clinician-review"}]},
        "valueCodeableConcept": {"coding": [diagnosis]},
    }
    if ai:
        observation["derivedFrom"] = [{"reference": f"Observation/{ai}/_history/1"}]
    return observation


def ai_result(subject: dict[str, str], lesion: str, device: str, positive: bool, when: str) -> dict[str, Any]:
    """A melanoma risk result as the inference worker writes it (inference.findings.risk_observation)."""
    tier = {"system": "urn:dermbridge:risk-tier", "code": "melanoma"}
    reading = "POS" if positive else "NEG"
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "subject": subject,
        "code": {"coding": [{"system": "urn:dermbridge:ai-risk", "code": "probability-of-93655004"}]},
        "focus": [{"reference": f"BodyStructure/{lesion}"}],
        "device": {"reference": f"Device/{device}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 0.9 if positive else 0.1, "system": "http://unitsofmeasure.org", "code": "1"},
        "interpretation": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": reading}
                ]
            }
        ],
        "component": [
            {
                "code": {"coding": [{"system": "urn:dermbridge:ai-result", "code": "risk-tier"}]},
                "valueCodeableConcept": {"coding": [tier]},
            }
        ],
    }


def pathology(subject: dict[str, str], of: str, diagnosis: dict[str, str], pathologist: str) -> dict[str, Any]:
    """A pathology report as a laboratory sends it, linked to the lesion it examined."""
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "subject": subject,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "PAT"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "11526-1", "display": "Pathology study"}]},
        "extension": [
            {"url": "urn:dermbridge:fhir:StructureDefinition:histology-of", "valueReference": {"reference": of}}
        ],
        "effectiveDateTime": (WHEN + timedelta(days=7)).isoformat(),
        "issued": (WHEN + timedelta(days=8)).isoformat(),
        "resultsInterpreter": [{"reference": pathologist}],
        "conclusionCode": [{"coding": [diagnosis]}],
    }
