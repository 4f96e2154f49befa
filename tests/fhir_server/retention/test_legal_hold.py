"""Issue 14, "Retention and legal hold": a hold on a patient or a case blocks ``$erase`` and deletion
with 409 until released; placing and releasing are audited; a patient/ scope cannot use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import diagnostic_report, observation, patient
from tests.fhir_server.security.smart import IdentityProvider

HOLD_TAG = "urn:dermbridge:record-flag|legal-hold"


def reason(text: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": text}]}


class Record:
    """One patient with a case (a DiagnosticReport with one result) and an Observation outside the case."""

    def __init__(self, client: FhirTestClient) -> None:
        self.client = client
        self.patient = client.post(f"{BASE}/Patient", json=patient(family="Held")).json()["id"]
        subject = f"Patient/{self.patient}"
        self.result = client.post(f"{BASE}/Observation", json=observation(subject)).json()["id"]
        self.other = client.post(f"{BASE}/Observation", json=observation(subject)).json()["id"]
        case = diagnostic_report(subject, result=[{"reference": f"Observation/{self.result}"}])
        self.case = client.post(f"{BASE}/DiagnosticReport", json=case).json()["id"]

    def hold(self, target: str, why: str = "litigation 2026-117") -> dict[str, Any]:
        response = self.client.post(f"{BASE}/{target}/$legal-hold", json=reason(why))
        assert response.status_code == 201, response.text
        flag: dict[str, Any] = response.json()
        return flag

    def release(self, target: str, why: str = "case settled") -> Any:
        return self.client.post(f"{BASE}/{target}/$release-legal-hold", json=reason(why))


@pytest.fixture
def record(client: FhirTestClient) -> Record:
    return Record(client)


def diagnostics(response: Any) -> str:
    return str(response.json()["issue"][0]["diagnostics"])


def test_a_patient_hold_blocks_erase_and_every_deletion_until_released(record: Record) -> None:
    c = record.client
    flag = record.hold(f"Patient/{record.patient}")
    assert flag["resourceType"] == "Flag" and flag["status"] == "active"
    assert flag["subject"]["reference"] == f"Patient/{record.patient}" and flag["period"]["start"]
    erase = c.post(f"{BASE}/Patient/{record.patient}/$erase")
    assert erase.status_code == 409 and f"Flag/{flag['id']}" in diagnostics(erase)
    assert "litigation 2026-117" in diagnostics(erase)
    for path in (f"Patient/{record.patient}", f"Observation/{record.other}", f"DiagnosticReport/{record.case}"):
        refused = c.delete(f"{BASE}/{path}")
        assert refused.status_code == 409 and "legal hold" in diagnostics(refused), path
    conditional = c.delete(f"{BASE}/Observation", params={"subject": f"Patient/{record.patient}"})
    assert conditional.status_code == 409
    assert c.delete(f"{BASE}/Flag/{flag['id']}").status_code == 409  # the hold itself stays
    assert c.get(f"{BASE}/Observation/{record.other}").status_code == 200  # nothing was deleted
    found = c.get(f"{BASE}/Flag", params={"subject": f"Patient/{record.patient}", "_tag": HOLD_TAG}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [flag["id"]]

    released = record.release(f"Patient/{record.patient}")
    assert released.status_code == 200
    assert released.json()["parameter"][0]["valueReference"]["reference"] == f"Flag/{flag['id']}"
    after = c.get(f"{BASE}/Flag/{flag['id']}").json()
    assert after["status"] == "inactive" and after["period"]["end"] >= after["period"]["start"]
    assert {"url": "urn:dermbridge:legal-hold-release-reason", "valueString": "case settled"} in after["extension"]
    assert c.delete(f"{BASE}/Observation/{record.other}").status_code in (200, 204)
    assert c.post(f"{BASE}/Patient/{record.patient}/$erase").status_code == 200
    assert c.get(f"{BASE}/Patient/{record.patient}").status_code == 410


def test_a_case_hold_keeps_the_case_its_evidence_and_the_patient_only(record: Record) -> None:
    c = record.client
    record.hold(f"DiagnosticReport/{record.case}")
    for path in (f"DiagnosticReport/{record.case}", f"Observation/{record.result}", f"Patient/{record.patient}"):
        assert c.delete(f"{BASE}/{path}").status_code == 409, path
    assert c.post(f"{BASE}/Patient/{record.patient}/$erase").status_code == 409
    assert c.delete(f"{BASE}/Observation/{record.other}").status_code in (200, 204)  # outside the case
    assert record.release(f"Patient/{record.patient}").status_code == 404  # a patient release: not the case's
    assert record.release(f"DiagnosticReport/{record.case}").status_code == 200
    assert c.delete(f"{BASE}/DiagnosticReport/{record.case}").status_code in (200, 204)


def test_holds_are_placed_and_released_by_their_operations_only(record: Record) -> None:
    c = record.client
    flag = record.hold(f"Patient/{record.patient}")
    edited = {**flag, "status": "inactive"}
    assert c.put(f"{BASE}/Flag/{flag['id']}", json=edited).status_code == 409
    forged = {k: v for k, v in flag.items() if k not in ("id", "meta")}
    assert c.post(f"{BASE}/Flag", json=forged).status_code == 409
    assert c.post(f"{BASE}/Patient/{record.patient}/$legal-hold", json=reason("")).status_code == 400
    assert c.post(f"{BASE}/Patient/{record.patient}/$legal-hold", json=reason("x" * 1001)).status_code == 400
    assert c.get(f"{BASE}/Patient/{record.patient}/$legal-hold").status_code == 405
    assert c.post(f"{BASE}/Patient/unknown/$legal-hold", json=reason("why")).status_code == 404


def test_placing_and_releasing_a_hold_are_audited_with_who_and_why(record: Record) -> None:
    c = record.client
    flag = record.hold(f"Patient/{record.patient}", "subpoena 42")
    record.release(f"Patient/{record.patient}", "subpoena withdrawn")
    events = c.get(f"{BASE}/AuditEvent", params={"entity": f"Flag/{flag['id']}", "_count": "50"}).json()
    found = {
        e["resource"]["subtype"][0]["code"]: e["resource"]
        for e in events.get("entry", [])
        if e["resource"]["subtype"][0]["system"] == "urn:dermbridge:audit-subtype"
    }
    assert set(found) == {"legal-hold", "release-legal-hold"}
    for code, why in (("legal-hold", "subpoena 42"), ("release-legal-hold", "subpoena withdrawn")):
        event = found[code]
        assert event["entity"][0]["detail"] == [{"type": "reason", "valueString": why}]
        assert event["agent"][0]["who"]["display"] not in ("", "(authentication disabled)")
        assert event["entity"][1]["what"]["reference"] == f"Patient/{record.patient}"


@pytest.fixture
def provider_client(tmp_path: Path) -> Iterator[tuple[FhirTestClient, IdentityProvider]]:
    provider = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **provider.settings) as client:
        yield client, provider


def test_a_patient_scope_cannot_place_or_release_a_hold(
    provider_client: tuple[FhirTestClient, IdentityProvider],
) -> None:
    client, provider = provider_client
    record = Record(client)
    own = provider.headers("patient/Patient.cruds patient/DiagnosticReport.cruds", record.patient)
    for target in (f"Patient/{record.patient}", f"DiagnosticReport/{record.case}"):
        for operation in ("$legal-hold", "$release-legal-hold"):
            refused = client.post(f"{BASE}/{target}/{operation}", json=reason("mine"), headers=own)
            assert refused.status_code == 403, (target, operation, refused.text)
    system = {"Authorization": f"Bearer {client.token(scope='system/Patient.u system/Patient.r')}"}
    placed = client.post(f"{BASE}/Patient/{record.patient}/$legal-hold", json=reason("court order"), headers=system)
    assert placed.status_code == 201, placed.text


def test_a_transaction_bundle_meets_the_hold_too(record: Record) -> None:
    c = record.client
    record.hold(f"Patient/{record.patient}")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Observation/{record.other}"}}],
    }
    refused = c.post(BASE, json=bundle)
    assert refused.status_code == 409 and "legal hold" in diagnostics(refused)
    assert c.get(f"{BASE}/Observation/{record.other}").status_code == 200


def test_the_hold_operations_are_declared(client: FhirTestClient) -> None:
    statement = client.get(f"{BASE}/metadata").json()
    for resource in statement["rest"][0]["resource"]:
        if resource["type"] in ("Patient", "DiagnosticReport"):
            names = {operation["name"] for operation in resource.get("operation", [])}
            assert {"legal-hold", "release-legal-hold"} <= names, resource["type"]


def test_each_of_two_holds_is_released_on_its_own(record: Record) -> None:
    c = record.client
    first = record.hold(f"Patient/{record.patient}", "matter A")
    second = record.hold(f"Patient/{record.patient}", "matter B")
    body = reason("matter A closed")
    body["parameter"].append({"name": "hold", "valueReference": {"reference": f"Flag/{first['id']}"}})
    released = c.post(f"{BASE}/Patient/{record.patient}/$release-legal-hold", json=body)
    assert [p["valueReference"]["reference"] for p in released.json()["parameter"]] == [f"Flag/{first['id']}"]
    still = c.delete(f"{BASE}/Observation/{record.other}")
    assert (
        still.status_code == 409 and f"Flag/{second['id']}" in diagnostics(still) and "matter B" in diagnostics(still)
    )
    assert record.release(f"Patient/{record.patient}").status_code == 200
    assert record.release(f"Patient/{record.patient}").status_code == 404  # nothing active is left
    assert c.delete(f"{BASE}/Observation/{record.other}").status_code in (200, 204)


def plain_flag(subject: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Flag", "status": "active", "code": {"text": "latex allergy"},
            "subject": {"reference": subject}, **extra}  # fmt: skip


UPPER_SYSTEM = "URN:dermbridge:record-flag"
HOLD_CODING = {"system": "urn:dermbridge:record-flag", "code": "legal-hold"}
LOOK_ALIKES = {
    "hold tag, another code, reason extension (pentest-2 #5)": {
        "meta": {"tag": [HOLD_CODING]},
        "code": {"coding": [{"system": "urn:dermbridge:record-flag", "code": "not-a-hold"}]},
        "extension": [{"url": "urn:dermbridge:legal-hold-reason", "valueString": "court order"}],
    },
    "hold tag only": {"meta": {"tag": [HOLD_CODING]}},
    "hold code in other letter case": {"code": {"coding": [{"system": UPPER_SYSTEM, "code": "Legal-Hold"}]}},
    "hold tag in other letter case": {"meta": {"tag": [{"system": UPPER_SYSTEM.lower(), "code": "LEGAL-HOLD"}]}},
    "reason extension only": {"extension": [{"url": "urn:dermbridge:legal-hold-reason", "valueString": "x"}]},
    "case extension only": {"extension": [{"url": "urn:dermbridge:legal-hold-case",
                                           "valueReference": {"reference": "DiagnosticReport/1"}}]},
    "release extension as a modifier": {"modifierExtension": [{"url": "URN:dermbridge:legal-hold-released-by",
                                                               "valueString": "me"}]},
}  # fmt: skip


@pytest.mark.parametrize("variant", LOOK_ALIKES)
def test_client_flags_that_look_like_holds_are_409(
    provider_client: tuple[FhirTestClient, IdentityProvider], variant: str
) -> None:
    """Pentest 2 finding 5: a client Flag carrying the hold tag, a hold code in another letter case or a
    hold extension is refused like a real hold (409), by create, update, patch and transaction, for a
    patient/ and a user/ scope; the hold query finds no look-alike."""
    client, provider = provider_client
    record = Record(client)
    subject = f"Patient/{record.patient}"
    look_alike = plain_flag(subject, **LOOK_ALIKES[variant])
    for headers in (provider.headers("patient/*.cruds", record.patient), provider.headers("user/*.cruds")):
        created = client.post(f"{BASE}/Flag", json=look_alike, headers=headers)
        assert created.status_code == 409, created.text
        plain = client.post(f"{BASE}/Flag", json=plain_flag(subject), headers=headers)
        assert plain.status_code == 201, plain.text
        flag_id = plain.json()["id"]
        updated = client.put(f"{BASE}/Flag/{flag_id}", json={**look_alike, "id": flag_id}, headers=headers)
        assert updated.status_code == 409, updated.text
        patch = [{"op": "add", "path": f"/{key}", "value": value} for key, value in LOOK_ALIKES[variant].items()]
        patched = client.patch(f"{BASE}/Flag/{flag_id}", json=patch,
                               headers={**headers, "Content-Type": "application/json-patch+json"})  # fmt: skip
        assert patched.status_code == 409, patched.text
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": look_alike, "request": {"method": "POST", "url": "Flag"}}]}  # fmt: skip
        assert client.post(BASE, json=bundle, headers=headers).status_code == 409
    found = client.get(f"{BASE}/Flag", params={"subject": subject, "_tag": HOLD_TAG}).json()
    assert found.get("total", len(found.get("entry", []))) == 0 and not found.get("entry")
