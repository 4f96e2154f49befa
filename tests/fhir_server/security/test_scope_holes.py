"""Issue 19, "Access control (SMART scopes)", items 1-5: each hole as it was found, now closed; a Binary
read as its securityContext; and the repository's refusal to run without a named access policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.repository import Repository
from fhir_server.security.policy import AccessPolicy
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation, patient
from tests.fhir_server.security.smart import IdentityProvider

MRN = "urn:dermbridge:test-mrn"


class Clinic:
    """Alice (the launch patient of ``alice``'s token) and Bob, each with an Observation."""

    def __init__(self, client: FhirTestClient, provider: IdentityProvider) -> None:
        self.client = client
        self.provider = provider
        self.ids: dict[str, str] = {}
        for name, born in (("alice", "1970-05-02"), ("bob", "1981-11-23")):
            body = patient(family=name, birthDate=born, identifier=[{"system": MRN, "value": name}])
            self.ids[name] = client.post(f"{BASE}/Patient", json=body).json()["id"]
            self.ids[f"{name}-obs"] = client.post(f"{BASE}/Observation", json=self.obs(name)).json()["id"]
        self.alice = provider.headers("patient/Patient.rs patient/Observation.cruds", self.ids["alice"])

    def obs(self, name: str, **extra: Any) -> dict[str, Any]:
        return observation(f"Patient/{self.ids[name]}", **extra)

    def system(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client.token(scope=scope)}"}


@pytest.fixture
def clinic(tmp_path: Path) -> Iterator[Clinic]:
    provider = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **provider.settings) as client:
        yield Clinic(client, provider)


def test_1_a_patient_scope_cannot_write_into_another_patients_record(clinic: Clinic) -> None:
    """Compartment membership for writes is the subject/patient reference, not the performer."""
    c = clinic
    intruding = c.obs("bob", performer=[{"reference": f"Patient/{c.ids['alice']}"}])
    refused = c.client.post(f"{BASE}/Observation", json=intruding, headers=c.alice)
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"
    in_bobs = c.client.get(f"{BASE}/Patient/{c.ids['bob']}/Observation").json()
    assert [e["resource"]["id"] for e in in_bobs["entry"]] == [c.ids["bob-obs"]]
    moved = {**intruding, "id": c.ids["alice-obs"]}  # nor move its own Observation into Bob's record
    assert c.client.put(f"{BASE}/Observation/{c.ids['alice-obs']}", json=moved, headers=c.alice).status_code == 403
    own = c.obs("alice", performer=[{"reference": f"Patient/{c.ids['alice']}"}])
    assert c.client.post(f"{BASE}/Observation", json=own, headers=c.alice).status_code == 201


def test_2_if_none_exist_does_not_hand_out_another_patients_resource(clinic: Clinic) -> None:
    """A match the caller may not see is no match (a new resource of its own is created); a token
    without read and search scope cannot ask at all."""
    c = clinic
    asking = {**c.alice, "If-None-Exist": f"_id={c.ids['bob-obs']}"}
    answer = c.client.post(f"{BASE}/Observation", json=c.obs("alice"), headers=asking)
    assert answer.status_code == 201 and answer.json()["id"] != c.ids["bob-obs"]
    assert answer.json()["subject"]["reference"] == f"Patient/{c.ids['alice']}"
    create_only = {**c.system("system/Observation.c"), "If-None-Exist": f"_id={c.ids['bob-obs']}"}
    refused = c.client.post(f"{BASE}/Observation", json=c.obs("bob"), headers=create_only)
    assert refused.status_code == 403 and c.ids["bob-obs"] not in refused.text
    plain = c.client.post(f"{BASE}/Observation", json=c.obs("bob"), headers=c.system("system/Observation.c"))
    assert plain.status_code == 201  # creating without a condition stays allowed


def test_3_another_patients_deleted_resource_is_neither_readable_nor_taken_over(clinic: Clinic) -> None:
    c = clinic
    bobs = c.ids["bob-obs"]
    assert c.client.delete(f"{BASE}/Observation/{bobs}").status_code == 200
    assert c.client.get(f"{BASE}/Observation/{bobs}/_history/1", headers=c.alice).status_code == 404
    assert c.client.get(f"{BASE}/Observation/{bobs}/_history/2", headers=c.alice).status_code == 404
    assert c.client.get(f"{BASE}/Observation/{bobs}/_history", headers=c.alice).status_code == 404
    assert c.client.get(f"{BASE}/Observation/{bobs}", headers=c.alice).status_code == 404  # not 410
    takeover = {**c.obs("alice"), "id": bobs}
    assert c.client.put(f"{BASE}/Observation/{bobs}", json=takeover, headers=c.alice).status_code == 404
    assert c.client.get(f"{BASE}/Observation/{bobs}").status_code == 410  # still Bob's tombstone
    assert c.client.get(f"{BASE}/Observation/{bobs}/_history/1").json()["subject"]["reference"].endswith(c.ids["bob"])
    own = c.ids["alice-obs"]  # the patient's own deleted resource: its history stays readable
    assert c.client.delete(f"{BASE}/Observation/{own}", headers=c.alice).status_code == 200
    assert c.client.get(f"{BASE}/Observation/{own}/_history/1", headers=c.alice).status_code == 200
    assert c.client.get(f"{BASE}/Observation/{own}", headers=c.alice).status_code == 410


def _reference_batch(kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    entry = {"request": {"method": "POST", "url": resource["resourceType"]}, "resource": resource}
    return {"resourceType": "Bundle", "type": kind, "entry": [entry]}


def test_4_conditional_references_need_search_scope_and_respect_the_compartment(clinic: Clinic) -> None:
    c = clinic
    probing = observation(f"Patient?identifier={MRN}|bob")
    answer = c.client.post(BASE, json=_reference_batch("batch", probing), headers=c.alice).json()
    (result,) = answer["entry"]
    assert result["response"]["status"].startswith("404") and c.ids["bob"] not in str(answer)
    own = observation(f"Patient?identifier={MRN}|alice")
    answer = c.client.post(BASE, json=_reference_batch("batch", own), headers=c.alice).json()
    assert answer["entry"][0]["response"]["status"].startswith("201")

    device = {"Authorization": f"Bearer {c.client.token(roles=('imaging-device',))}"}  # system/ImagingStudy.crs
    statuses = set()
    for born in ("1981-11-23", "1999-01-01"):  # Bob's true birthDate, and a wrong one
        study = {"resourceType": "ImagingStudy", "status": "available",
                 "subject": {"reference": f"Patient?identifier={MRN}|bob&birthdate={born}"}}  # fmt: skip
        answered = c.client.post(BASE, json=_reference_batch("transaction", study), headers=device)
        statuses.add(answered.status_code)
    assert statuses == {403}  # the same answer whatever the birthDate: nothing learnt


def test_5_chained_search_needs_search_scope_on_every_type_it_crosses(clinic: Clinic) -> None:
    c = clinic
    observations_only = c.system("system/Observation.rs")
    for born in ("1981-11-23", "1999-01-01"):
        chained = {"subject:Patient.birthdate": born}
        assert c.client.get(f"{BASE}/Observation", params=chained, headers=observations_only).status_code == 403
    reverse = {"_has:Observation:subject:code": "8867-4"}
    assert c.client.get(f"{BASE}/Patient", params=reverse, headers=c.system("system/Patient.rs")).status_code == 403
    both = c.system("system/Observation.rs system/Patient.rs")
    found = c.client.get(f"{BASE}/Observation", params={"subject:Patient.birthdate": "1981-11-23"}, headers=both)
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [c.ids["bob-obs"]]
    patient_chain = {"subject:Patient.birthdate": "1981-11-23"}  # a patient/ token's hop sees its own patient only
    assert c.client.get(f"{BASE}/Observation", params=patient_chain, headers=c.alice).json().get("entry", []) == []


def test_a_binary_is_read_under_a_patient_scope_as_its_security_context(clinic: Clinic) -> None:
    c = clinic
    ids = {}
    for name in ("alice", "bob"):
        binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk=",
                  "securityContext": {"reference": f"Observation/{c.ids[name + '-obs']}"}}  # fmt: skip
        ids[name] = c.client.post(f"{BASE}/Binary", json=binary).json()["id"]
    scoped = c.provider.headers("patient/Binary.r", c.ids["alice"])
    assert c.client.get(f"{BASE}/Binary/{ids['alice']}", headers=scoped).status_code == 200
    assert c.client.get(f"{BASE}/Binary/{ids['bob']}", headers=scoped).status_code == 404


def test_a_repository_is_made_for_a_policy_or_as_the_named_system_context(tmp_path: Path) -> None:
    with make_client(tmp_path / "var") as client:
        store = client.portal.call(client.app.state.fhir_http.engine.tenant, "default")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        Repository(store)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Repository(store, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Repository.system(store, reason=" ")
    assert Repository.system(store, reason="a test").policy.system_reason == "a test"
    with pytest.raises(ValueError):
        AccessPolicy(None)


def _links(c: Clinic, who: str) -> list[dict[str, Any]]:
    return c.client.get(f"{BASE}/Patient/{c.ids[who]}").json().get("link", [])


def test_6_a_patient_scope_cannot_erase_nor_claim_another_record_by_a_merge_link(clinic: Clinic) -> None:
    """A patient/ token wrote ``link replaces Patient/bob`` on its own Patient, then ``$erase``d it: Bob
    went with it. $erase needs a user/ or system/ scope; merge links are written by $merge only."""
    c = clinic
    alice, bob = c.ids["alice"], c.ids["bob"]
    full = c.provider.headers("patient/*.cruds", alice)
    claim = {**patient(family="alice"), "id": alice, "link": [{"other": {"reference": f"Patient/{bob}"},
                                                                 "type": "replaces"}]}  # fmt: skip
    refused = c.client.put(f"{BASE}/Patient/{alice}", json=claim, headers=full)
    assert refused.status_code == 422 and "$merge" in refused.json()["issue"][0]["diagnostics"]
    clinician = c.system("user/Patient.cruds user/Observation.cruds")
    assert c.client.put(f"{BASE}/Patient/{alice}", json=claim, headers=clinician).status_code == 422
    patch = [{"op": "add", "path": "/link", "value": claim["link"]}]
    json_patch = {**full, "Content-Type": "application/json-patch+json"}
    assert c.client.patch(f"{BASE}/Patient/{alice}", json=patch, headers=json_patch).status_code == 422
    erase = c.client.post(f"{BASE}/Patient/{alice}/$erase", json={"resourceType": "Parameters"}, headers=full)
    assert erase.status_code == 403 and erase.json()["issue"][0]["code"] == "forbidden"
    assert c.client.get(f"{BASE}/Patient/{bob}").status_code == 200
    assert c.client.get(f"{BASE}/Patient/{alice}").status_code == 200
    merge = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{bob}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{alice}"}}]}  # fmt: skip
    merged = c.client.post(f"{BASE}/Patient/$merge", json=merge)
    assert merged.status_code == 200, merged.text
    assert {"other": {"reference": f"Patient/{bob}"}, "type": "replaces"} in _links(c, "alice")
    unlinking = {**patient(family="alice"), "id": alice}  # nor may a write drop the link $merge set
    assert c.client.put(f"{BASE}/Patient/{alice}", json=unlinking, headers=clinician).status_code == 422


def test_7_erasure_removes_what_the_patient_owns_not_what_names_it_as_performer(clinic: Clinic) -> None:
    c = clinic
    alice, bob = c.ids["alice"], c.ids["bob"]
    performed = c.obs("bob", performer=[{"reference": f"Patient/{alice}"}])
    bobs = c.client.post(f"{BASE}/Observation", json=performed).json()["id"]
    erased = c.client.post(f"{BASE}/Patient/{alice}/$erase", json={"resourceType": "Parameters"})
    assert erased.status_code == 200, erased.text
    assert c.client.get(f"{BASE}/Observation/{c.ids['alice-obs']}").status_code == 410
    kept = c.client.get(f"{BASE}/Observation/{bobs}")
    assert kept.status_code == 200 and kept.json()["subject"]["reference"] == f"Patient/{bob}"
    assert c.client.get(f"{BASE}/Patient/{bob}").status_code == 200


def test_8_history_under_a_patient_scope_holds_only_the_patients_own_versions(clinic: Clinic) -> None:
    """An Observation first Bob's, then moved into Alice's record: its history shows Alice only v2."""
    c = clinic
    moved = {**c.obs("alice"), "id": c.ids["bob-obs"]}
    assert c.client.put(f"{BASE}/Observation/{c.ids['bob-obs']}", json=moved).status_code == 200
    history = c.client.get(f"{BASE}/Observation/{c.ids['bob-obs']}/_history", headers=c.alice).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2"] and history["total"] == 1
    assert c.ids["bob"] not in str(history)
    assert c.client.get(f"{BASE}/Observation/{c.ids['bob-obs']}/_history").json()["total"] == 2  # the admin sees both


def test_9_a_legal_hold_is_described_only_to_whom_may_read_its_flag(clinic: Clinic) -> None:
    c = clinic
    why = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "litigation 2026-117"}]}
    flag = c.client.post(f"{BASE}/Patient/{c.ids['alice']}/$legal-hold", json=why)
    assert flag.status_code in (200, 201), flag.text
    observations_only = c.provider.headers("patient/Observation.cruds", c.ids["alice"])
    refused = c.client.delete(f"{BASE}/Observation/{c.ids['alice-obs']}", headers=observations_only)
    assert refused.status_code == 409 and "legal hold" in refused.text
    assert "litigation" not in refused.text and "Flag/" not in refused.text
    clinician = c.system("user/Observation.cruds user/Flag.rs")
    detailed = c.client.delete(f"{BASE}/Observation/{c.ids['alice-obs']}", headers=clinician)
    assert detailed.status_code == 409 and "litigation 2026-117" in detailed.text and "Flag/" in detailed.text


def test_everything_under_a_patient_wildcard_scope_leaves_out_the_types_no_patient_owns(clinic: Clinic) -> None:
    """``patient/*.rs`` covers types such as Appointment that no patient owns by subject/patient: the
    patient's own ``$everything`` leaves them out instead of refusing the whole operation (found by the
    re-test of session 7's pentest)."""
    c = clinic
    wildcard = c.provider.headers("patient/*.rs", c.ids["alice"])
    answer = c.client.get(f"{BASE}/Patient/{c.ids['alice']}/$everything", headers=wildcard)
    assert answer.status_code == 200, answer.text
    ids = {e["resource"]["id"] for e in answer.json()["entry"]}
    assert {c.ids["alice"], c.ids["alice-obs"]} <= ids
    assert not ids & {c.ids["bob"], c.ids["bob-obs"]}
    other = c.client.get(f"{BASE}/Patient/{c.ids['bob']}/$everything", headers=wildcard)
    assert other.status_code in (403, 404)


def test_10_a_patient_scope_cannot_write_an_audit_event(clinic: Clinic) -> None:
    """Pentest 3, finding 6: a patient/ token created an AuditEvent saying a named clinician opened the
    record, indistinguishable from the server's own. A system client's AuditEvent stays accepted (README)."""
    c = clinic
    alice = c.provider.headers("patient/*.cruds", c.ids["alice"])
    forged = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "action": "R",
        "recorded": "2026-11-30T10:00:00Z",
        "outcome": "0",
        "agent": [{"who": {"reference": "Practitioner/bob"}, "requestor": True}],
        "source": {"observer": {"display": "DermBridge"}},
        "entity": [{"what": {"reference": f"Patient/{c.ids['alice']}"}}],
    }
    refused = c.client.post(f"{BASE}/AuditEvent", json=forged, headers=alice)
    assert refused.status_code == 403 and "AuditEvent" in refused.json()["issue"][0]["diagnostics"]
    assert c.client.post(f"{BASE}/AuditEvent", json=forged, headers=c.system("system/AuditEvent.c")).status_code == 201
