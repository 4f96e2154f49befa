"""``Patient/$merge``: a device-created Patient merged into the EHR's one. Its resources, images
and Consents follow the target, the merge is audited, and erasing the target afterwards leaves
none of the source's personal data on disk."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pydicom

from dicom_node.attributes import INSTANCE
from fhir_server.identity.merge import repointed
from tests.conftest import BASE, FhirTestClient, make_client
from tests.dicom_factories import dermoscopic, stow_body
from tests.factories import observation
from tests.fhir_server.security.test_encryption import raw_bytes
from tests.fhir_server.test_consent import AI, consent

NAME = "Qwxzyborgmann"  # a name found nowhere else
DEVICE_ID = "DEV-MERGE-4471"
DEVICE_SYSTEM = "urn:dermbridge:issuer:CLINIC-DEVICE"


def merge(client: FhirTestClient, *parameters: dict[str, Any], **headers: str) -> Any:
    body = {"resourceType": "Parameters", "parameter": list(parameters)}
    return client.post(f"{BASE}/Patient/$merge", json=body, headers=headers)


def source_identifier() -> dict[str, Any]:
    return {"name": "source-patient-identifier", "valueIdentifier": {"system": DEVICE_SYSTEM, "value": DEVICE_ID}}


def target(patient_id: str) -> dict[str, Any]:
    return {"name": "target-patient", "valueReference": {"reference": f"Patient/{patient_id}"}}


def store_image(client: FhirTestClient, seed: int) -> tuple[pydicom.Dataset, bytes]:
    ds = dermoscopic(patient_id=DEVICE_ID, patient_name=f"{NAME}^ANNA", seed=seed, accession=f"ACC-MERGE-{seed}")
    ds.IssuerOfPatientID = "CLINIC-DEVICE"
    noise = np.random.default_rng(seed).integers(0, 256, (ds.Rows, ds.Columns, 3), dtype=np.uint8)
    ds.PixelData = noise.tobytes()
    body, media = stow_body(ds)
    assert client.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media}).status_code == 200
    return ds, noise.tobytes()[1000:1048]


def subject_of(client: FhirTestClient, resource_type: str, params: dict[str, str]) -> set[str]:
    bundle = client.get(f"{BASE}/{resource_type}", params=params).json()
    return {e["resource"].get("subject", e["resource"].get("patient", {}))["reference"] for e in bundle["entry"]}


def object_key_ref(client: FhirTestClient, instance_uid: str) -> str:
    store = client.portal.call(client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    record = client.portal.call(store.get_record, INSTANCE, instance_uid)
    return str(orjson.loads(record.body)["objectKey"]["ref"])


def test_merge_repoints_audits_and_erasure_of_the_target_leaves_no_plaintext(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data) as client:
        image, pixels = store_image(client, seed=7)
        source = client.get(f"{BASE}/Patient", params={"identifier": f"{DEVICE_SYSTEM}|{DEVICE_ID}"}).json()
        source_id = source["entry"][0]["resource"]["id"]
        ehr = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "D-2002"}],
               "name": [{"family": "Keeper", "given": ["Karl"]}]}  # fmt: skip
        target_id = client.post(f"{BASE}/Patient", json=ehr).json()["id"]
        finding = client.post(f"{BASE}/Observation", json=observation(f"Patient/{source_id}")).json()
        permit = client.post(f"{BASE}/Consent", json=consent(source_id, {"type": "permit", "purpose": [AI]})).json()

        preview = merge(client, source_identifier(), target(target_id), {"name": "preview", "valueBoolean": True})
        assert preview.status_code == 200, preview.text
        said = {p["name"]: p["resource"] for p in preview.json()["parameter"]}
        # the study, the image's Media, its lesion (BodyStructure), the case, the finding and the consent, and
        # the case's workflow Tasks, which the workflow engine writes in the background (how many: timing)
        count = re.search(r"would re-point (\d+) resources", said["outcome"]["issue"][0]["diagnostics"])
        assert count is not None and int(count.group(1)) >= 6, said["outcome"]
        assert client.get(f"{BASE}/Patient/{source_id}").json().get("active") is not False
        assert client.get(f"{BASE}/Observation/{finding['id']}").json()["subject"]["reference"].endswith(source_id)

        merged = merge(client, source_identifier(), target(target_id))
        assert merged.status_code == 200, merged.text
        result = next(p["resource"] for p in merged.json()["parameter"] if p["name"] == "result")
        assert {"other": {"reference": f"Patient/{source_id}"}, "type": "replaces"} in result["link"]
        assert {"system": DEVICE_SYSTEM, "value": DEVICE_ID, "use": "old"} in result["identifier"]
        retired = client.get(f"{BASE}/Patient/{source_id}").json()
        assert retired["active"] is False
        assert retired["link"] == [{"other": {"reference": f"Patient/{target_id}"}, "type": "replaced-by"}]
        for resource_type in ("Observation", "ImagingStudy", "Media", "DiagnosticReport", "BodyStructure"):
            assert subject_of(client, resource_type, {"_count": "50"}) == {f"Patient/{target_id}"}, resource_type
        moved = client.get(f"{BASE}/Consent/{permit['id']}").json()
        assert moved["patient"]["reference"] == f"Patient/{target_id}"  # the consent follows the patient
        assert client.get(f"{BASE}/Patient/{source_id}/Observation").json()["total"] == 0
        # the image: its key now sealed under the target's data key, and it still opens
        assert object_key_ref(client, image.SOPInstanceUID) == f"Patient/{target_id}"
        url = (f"/dicomweb/default/studies/{image.StudyInstanceUID}/series/{image.SeriesInstanceUID}"
               f"/instances/{image.SOPInstanceUID}/rendered")  # fmt: skip
        rendered = client.get(url, headers={"Accept": "image/png"})
        assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
        audit = client.get(f"{BASE}/AuditEvent", params={"subtype": "patient-merge"}).json()
        assert audit["total"] == 1
        entities = {e["what"]["reference"] for e in audit["entry"][0]["resource"]["entity"]}
        assert entities == {f"Patient/{source_id}", f"Patient/{target_id}"}
        # a later image under the source's identifier joins the survivor
        later, later_pixels = store_image(client, seed=8)
        assert object_key_ref(client, later.SOPInstanceUID) == f"Patient/{target_id}"
        assert subject_of(client, "ImagingStudy", {"_count": "50"}) == {f"Patient/{target_id}"}

        again = merge(client, {"name": "source-patient", "valueReference": {"reference": f"Patient/{source_id}"}},
                      target(target_id))  # fmt: skip
        assert again.status_code == 422 and "already merged" in again.json()["issue"][0]["diagnostics"]
        ambiguous = merge(client, source_identifier(), target(target_id))  # the target carries it too now
        assert ambiguous.status_code == 422 and "match 2 Patients" in ambiguous.json()["issue"][0]["diagnostics"]
        assert client.post(f"{BASE}/Patient/{source_id}/$erase").status_code == 409  # erase the survivor instead
        # the name is in the plaintext search index now (the disk is scanned only once the server has
        # stopped: reading a live SQLite file in its own process drops the process's POSIX locks)
        assert client.get(f"{BASE}/Patient", params={"name": NAME}).json()["total"] == 1

        erased = client.post(f"{BASE}/Patient/{target_id}/$erase")
        assert erased.status_code == 200, erased.text
        assert "with the 1 record(s) merged into it" in erased.json()["issue"][0]["diagnostics"]
        assert client.get(f"{BASE}/Patient/{source_id}").status_code == 410
        assert client.get(f"{BASE}/Observation/{finding['id']}/_history/1").status_code == 410  # pre-merge version
    after = raw_bytes(data)
    for secret in (NAME.encode(), NAME.upper().encode(), DEVICE_ID.encode(), pixels, later_pixels):
        assert secret not in after, secret
    with sqlite3.connect(data / "tenants" / "default.sqlite") as conn:
        keys = {row[0] for row in conn.execute("SELECT key FROM record WHERE collection = 'crypto.data-key'")}
    assert not keys & {f"Patient/{source_id}", f"Patient/{target_id}"}


def test_merge_refuses_what_it_cannot_do(client: FhirTestClient) -> None:
    first = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
    second = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
    source = {"name": "source-patient", "valueReference": {"reference": f"Patient/{first}"}}
    same = merge(client, source, target(first))
    assert same.status_code == 422 and same.json()["issue"][0]["expression"] == ["source-patient"]
    unknown = merge(client, source_identifier(), target(second))
    assert unknown.status_code == 422 and "no Patient" in unknown.json()["issue"][0]["diagnostics"]
    assert merge(client, target(second)).status_code == 400  # no source
    wrong_result = {"name": "result-patient", "resource": {"resourceType": "Patient", "id": first}}
    assert merge(client, source, target(second), wrong_result).status_code == 422
    clinician = f"Bearer {client.token(roles=('clinician-reviewer',))}"
    assert merge(client, source, target(second), Authorization=clinician).status_code == 403
    assert client.get(f"{BASE}/Patient/{first}").json().get("active") is None  # nothing changed
    statement = client.get(f"{BASE}/metadata").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "merge" in {o["name"] for o in patient["operation"]}


def test_references_are_repointed_in_every_form_and_nothing_else() -> None:
    resource = {
        "subject": {"reference": "Patient/src", "display": "Patient/src"},
        "performer": [{"reference": "http://example.org/fhir/default/Patient/src/_history/3"}],
        "focus": [{"reference": "Patient/src2"}, {"reference": "Group/src"}],
        "note": [{"text": "see Patient/src"}],
    }
    moved = repointed(resource, "src", "tgt")
    assert moved["subject"] == {"reference": "Patient/tgt", "display": "Patient/src"}
    assert moved["performer"][0]["reference"] == "http://example.org/fhir/default/Patient/tgt"
    assert moved["focus"] == resource["focus"] and moved["note"] == resource["note"]


def test_an_open_review_task_follows_the_merged_patient(client: FhirTestClient) -> None:
    """A patient whose case waits in the review queue can be merged: the review Task is re-pointed to
    the survivor (by the merge's named system context) and stays in the queue as it was."""
    from fhir_server.repository import Repository
    from fhir_server.workflow.review import open_review

    source_id = client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": "Twin"}]}).json()[
        "id"
    ]
    target_id = client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": "Keeper"}]}).json()[
        "id"
    ]
    case = {"resourceType": "DiagnosticReport", "status": "preliminary", "code": {"text": "skin lesion assessment"},
            "subject": {"reference": f"Patient/{source_id}"}}  # fmt: skip
    report_id = client.post(f"{BASE}/DiagnosticReport", json=case).json()["id"]

    async def queued() -> str:
        store = await client.app.state.engine.tenant("default")  # type: ignore[attr-defined]
        repo = Repository.system(store, reason="test: a case waiting for review")
        task = await open_review(repo, report_id=report_id, patient_id=source_id, tier="dermatologist",
                                 reason="the AI flagged a lesion", urgency="asap")  # fmt: skip
        return str(task.resource["id"])

    task_id = client.portal.call(queued)
    before = client.get(f"{BASE}/Task/{task_id}").json()
    assert before["for"]["reference"] == f"Patient/{source_id}" and before["status"] == "requested"

    merged = merge(client, {"name": "source-patient", "valueReference": {"reference": f"Patient/{source_id}"}},
                   target(target_id))  # fmt: skip
    assert merged.status_code == 200, merged.text
    after = client.get(f"{BASE}/Task/{task_id}").json()
    assert after["for"]["reference"] == f"Patient/{target_id}"
    assert (after["status"], after["priority"], after["businessStatus"]) == (
        before["status"], before["priority"], before["businessStatus"])  # fmt: skip
    report = client.get(f"{BASE}/DiagnosticReport/{report_id}").json()
    assert report["subject"]["reference"] == f"Patient/{target_id}"
