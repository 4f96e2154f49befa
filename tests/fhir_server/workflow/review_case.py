"""A case ready for review, reviewers with their PractitionerRoles and tokens, and the calls they make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from fhir_server.repository import Repository
from fhir_server.tenant_settings import write_setting
from fhir_server.workflow.review import open_review
from fhir_server.workflow.review.codes import LEASE_EXTENSION
from fhir_server.workflow.review.policy import SETTING
from tests.conftest import BASE, FhirTestClient
from tests.factories import diagnostic_report, patient
from tests.fhir_server.outcomes.cohort import server_write

SNOMED = "http://snomed.info/sct"
DERMATOLOGY = {"coding": [{"system": SNOMED, "code": "394582007", "display": "Dermatology"}]}
MELANOMA = {
    "coding": [{"system": SNOMED, "code": "93655004", "display": "Malignant melanoma of skin"}],
    "text": "Melanoma",
}
NAEVUS = {"coding": [{"system": SNOMED, "code": "400096001", "display": "Melanocytic nevus"}], "text": "Naevus"}


def parameters(*items: tuple[str, Any]) -> dict[str, Any]:
    """A Parameters body: a code or string, a dict (CodeableConcept or Reference), a list (parts)."""
    built = []
    for name, value in items:
        if isinstance(value, list):
            built.append({"name": name, "part": [parameters(p)["parameter"][0] for p in value]})
        elif isinstance(value, dict):
            built.append({"name": name, ("valueReference" if "reference" in value else "valueCodeableConcept"): value})
        else:
            built.append(
                {"name": name, "valueCode" if name in ("decision", "reason", "urgency") else "valueString": value}
            )
    return {"resourceType": "Parameters", "parameter": built}


class ReviewCase:
    """A patient with a lesion, an AI finding (melanoma suspected) and the case awaiting review."""

    def __init__(self, client: FhirTestClient) -> None:
        self.client = client
        self.patient = self.post("Patient", patient(family="Reviewed"))
        subject = {"reference": f"Patient/{self.patient}"}
        site = {"coding": [{"system": SNOMED, "code": "22943007", "display": "Trunk"}], "text": "back"}
        self.lesion = self.post(
            "BodyStructure", {"resourceType": "BodyStructure", "patient": subject, "location": site}
        )
        device = self.post(
            "Device", {"resourceType": "Device", "deviceName": [{"name": "skin model", "type": "model-name"}]}
        )
        self.ai = self.post(
            "Observation",
            {
                "resourceType": "Observation",
                "status": "preliminary",
                "subject": subject,
                "code": {"coding": [{"system": SNOMED, "code": "439401001", "display": "Diagnosis"}]},
                "focus": [{"reference": f"BodyStructure/{self.lesion}"}],
                "valueCodeableConcept": MELANOMA,
                "device": {"reference": f"Device/{device}"},
            },
        )
        self.score = server_write(  # a risk result beside the predicted diagnosis (only the server writes one)
            self.client,
            {
                "resourceType": "Observation",
                "status": "preliminary",
                "subject": subject,
                "code": {"coding": [{"system": "urn:dermbridge:ai-risk", "code": "probability-of-93655004"}]},
                "focus": [{"reference": f"BodyStructure/{self.lesion}"}],
                "valueQuantity": {
                    "value": 0.91,
                    "unit": "probability",
                    "system": "http://unitsofmeasure.org",
                    "code": "1",
                },
                "device": {"reference": f"Device/{device}"},
            },
        )
        self.case = self.post(
            "DiagnosticReport",
            diagnostic_report(
                f"Patient/{self.patient}",
                status="preliminary",
                result=[{"reference": f"Observation/{self.ai}"}, {"reference": f"Observation/{self.score}"}],
                conclusion="AI (preliminary, skin model): melanoma. Awaiting clinician review.",
            ),
        )

    def post(self, resource_type: str, resource: dict[str, Any]) -> str:
        response = self.client.post(f"{BASE}/{resource_type}", json=resource)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def system(self) -> Any:
        app = self.client.app
        store = self.client.portal.call(app.state.engine.tenant, "default")  # type: ignore[attr-defined]
        return Repository.system(store, reason="test")

    def open(self, tier: str = "dermatologist", urgency: str = "asap") -> dict[str, Any]:
        call = partial(
            open_review,
            self.system(),
            report_id=self.case,
            patient_id=self.patient,
            tier=tier,
            reason="AI suspects melanoma",
            urgency=urgency,
            due=None,
        )
        return dict(self.client.portal.call(call).resource)

    def reviewer(self, name: str, *, expires: str | None = None, specialty: dict[str, Any] = DERMATOLOGY) -> Reviewer:
        practitioner = self.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": name}]})
        role: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner}"},
            "specialty": [specialty],
        }
        if expires:
            role["period"] = {"start": "2020-01-01", "end": expires}
        self.post("PractitionerRole", role)
        return Reviewer(self.client, f"Practitioner/{practitioner}")

    def set_policy(self, policy: dict[str, Any]) -> None:
        """The tenant's review policy, set as an operator would (a tenant setting)."""
        store = self.client.portal.call(self.client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
        self.client.portal.call(write_setting, store, SETTING, policy)

    def lapse_claim(self, task_id: str) -> None:
        """Move the claim's lease end into the past through the store (no waiting)."""
        repo = self.system()
        task = dict(self.client.portal.call(repo.read, "Task", task_id).resource)
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="milliseconds")
        task["extension"] = [e for e in task["extension"] if e["url"] != LEASE_EXTENSION]
        task["extension"].append({"url": LEASE_EXTENSION, "valueInstant": past})
        self.client.portal.call(partial(repo.update, task, resource_type="Task", id=task_id, server_built=True))


class Reviewer:
    """A clinician: a client acting for their Practitioner (its tokens carry fhirUser)."""

    def __init__(self, client: FhirTestClient, practitioner: str) -> None:
        self.client = client
        self.practitioner = practitioner
        app = client.app
        create = partial(
            app.state.clients.create,
            "default",
            "reviewer",
            ("clinician-reviewer",),  # type: ignore[attr-defined]
            fhir_user=practitioner,
        )
        registered, secret = client.portal.call(create)
        form = {"grant_type": "client_credentials", "client_id": registered.client_id, "client_secret": secret}
        token = client.post("/auth/token", data=form, headers={"Authorization": ""}).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def op(self, task: str, name: str, *items: tuple[str, Any]) -> Any:
        return self.client.post(f"{BASE}/Task/{task}/${name}", json=parameters(*items), headers=self.headers)

    def get(self, path: str) -> Any:
        return self.client.get(f"{BASE}/{path}", headers=self.headers)
