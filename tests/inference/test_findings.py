"""What the AI writes, end to end (dcmtk's storescu -> DIMSE -> the inference worker -> FHIR search):
lesions as BodyStructures, a risk result per class, a predicted diagnosis above threshold, a case
conclusion that never drops, appended reports, demonstration labelling, and the AI Transparency IG's
Device, model card and Provenance. The demo model is synthetic: seeds are picked so that it calls
``suspicious=True`` images melanoma and the others naevus with high confidence."""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from inference.demo import DEMO_DIR
from inference.loaders import weights_sha256
from inference.results import AIAST
from inference.worker import CONSUMER, TOPIC
from tests.conftest import BASE, FhirTestClient, make_client
from tests.inference.test_worker import DEADLINE, SALIENCY, consenting_patient, lesion_instance, send, wait_for, worker
from tests.schema import assert_r4

pytestmark = pytest.mark.interop
SCT = "http://snomed.info/sct"
MELANOMA = f"{SCT}|93655004"
RISK = "urn:dermbridge:ai-risk"
EVERY_CLASS = f"{RISK}|probability-of-93655004,{RISK}|probability-of-400010006"
DIAGNOSIS = f"{SCT}|439401001"
INLINE = "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label"
SUSPICIOUS, BENIGN = (13, True), (15, False)  # (seed, suspicious): the demo model says p >= 0.99 for each


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    settings = {"inference_enabled": True, "dicom_any_ae_tenant": "default",
                "dicom_timezone": {"default": "America/New_York"}}  # fmt: skip
    with make_client(tmp_path / "var", **settings) as client:
        yield client


def image(mrn: str, which: tuple[int, bool], **kw: Any) -> pydicom.Dataset:
    seed, suspicious = which
    return lesion_instance(mrn, seed=seed, suspicious=suspicious, **kw)


def search(client: FhirTestClient, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
    bundle = client.get(f"{BASE}/{url}", params={**params, "_count": "200"}).json()
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def report_with(client: FhirTestClient, patient_id: str, results: int) -> dict[str, Any]:
    """The case once it lists ``results`` results and every analysed image's explanations are written
    (the findings are committed first, the explanations in a second step)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        reports = search(client, "DiagnosticReport", {"subject": f"Patient/{patient_id}"})
        if reports and len(reports[0].get("result", [])) >= results and explained(client, patient_id):
            return reports[0]
        assert time.monotonic() < deadline, f"the case never listed {results} results"
        time.sleep(0.1)


def explained(client: FhirTestClient, patient_id: str) -> bool:
    """Every image with risk results has its saliency map (step 2 committed)."""
    risks = search(client, "Observation", {"subject": f"Patient/{patient_id}", "code": EVERY_CLASS})
    images = {r["reference"] for o in risks for r in o["derivedFrom"] if r["reference"].startswith("Media/")}
    maps = search(client, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})
    return images <= {m["partOf"][0]["reference"] for m in maps}


def results_per_image(client: FhirTestClient, patient_id: str) -> int:
    return len(search(client, "Observation", {"subject": f"Patient/{patient_id}"}))


@pytest.mark.parametrize(
    "order", [(BENIGN, SUSPICIOUS), (SUSPICIOUS, BENIGN)], ids=["benign-first", "suspicious-first"]
)
def test_the_case_conclusion_never_drops(node: FhirTestClient, tmp_path: Path, order: Any) -> None:
    patient_id = consenting_patient(node, "F-1")
    first = image("F-1", order[0])
    send(node, tmp_path, first)
    per_image = len(report_with(node, patient_id, 1)["result"])
    second = image("F-1", order[1], study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID)
    send(node, tmp_path, second)
    report = report_with(node, patient_id, 2 * per_image)

    assert "Malignant melanoma of skin" in report["conclusion"]
    assert report["conclusion"].startswith("DEMONSTRATION ONLY, NOT A DIAGNOSIS")  # the demo card: clinical_use false
    assert "conclusionCode" not in report
    assert report["_conclusion"]["extension"] == [{"url": INLINE, "valueCoding": AIAST}]
    assert {s["code"] for s in report["meta"]["security"]} >= {"PROCESSINLINELABEL"}
    assert {t["code"] for t in report["meta"]["tag"]} >= {"demonstration"}
    notes = [e["valueAnnotation"]["text"] for e in report["extension"] if e["url"].endswith("DiagnosticReport.note")]
    assert any("DEMONSTRATION" in n for n in notes)
    # every result of both images is listed, and both images' results focus the same lesion
    observations = search(node, "Observation", {"subject": f"Patient/{patient_id}"})
    assert {f"Observation/{o['id']}" for o in observations} == {r["reference"] for r in report["result"]}
    assert len({o["focus"][0]["reference"] for o in observations}) == 1
    diagnoses = search(node, "Observation", {"subject": f"Patient/{patient_id}", "code": DIAGNOSIS})
    assert sorted(d["valueCodeableConcept"]["text"].split(" (")[0] for d in diagnoses) == [
        "Malignant melanoma of skin", "Melanocytic nevus of skin"]  # fmt: skip
    assert all("coding" not in d["valueCodeableConcept"] for d in diagnoses)  # a demonstration is never coded
    assert all(d["code"]["text"].startswith("DEMONSTRATION") for d in diagnoses)
    for resource in (report, *observations):
        assert_r4(resource)


def test_negatives_never_carry_the_disease(node: FhirTestClient, tmp_path: Path) -> None:
    benign = consenting_patient(node, "F-2")
    ds = image("F-2", BENIGN)
    ds.TimezoneOffsetFromUTC = "+0100"
    send(node, tmp_path, ds)
    report_with(node, benign, 1)
    assert search(node, "Observation", {"subject": f"Patient/{benign}", "value-concept": MELANOMA}) == []
    assert search(node, "Observation", {"subject": f"Patient/{benign}", "value-concept": f"{SCT}|372244006"}) == []
    risk = search(node, "Observation", {"subject": f"Patient/{benign}", "code": f"{RISK}|probability-of-93655004"})
    assert len(risk) == 1 and risk[0]["valueQuantity"]["value"] < 0.05
    assert risk[0]["valueQuantity"]["system"] == "http://unitsofmeasure.org" and risk[0]["valueQuantity"]["code"] == "1"
    assert search(node, "Observation", {"code": f"{RISK}|probability-of-93655004", "value-quantity": "ge0.5",
                                        "subject": f"Patient/{benign}"}) == []  # fmt: skip
    # one risk result per class of the card, each on the lesion, from the images, at acquisition time
    classes = search(node, "Observation", {"subject": f"Patient/{benign}", "code": EVERY_CLASS})
    assert len(classes) == 2
    lesion = node.get(f"{BASE}/{classes[0]['focus'][0]['reference']}").json()
    assert lesion["resourceType"] == "BodyStructure" and lesion["morphology"]["coding"][0]["code"] == "52988006"
    for observation in classes:
        assert observation["focus"] == classes[0]["focus"]
        assert {r["reference"].split("/")[0] for r in observation["derivedFrom"]} == {"ImagingStudy", "Media"}
        assert observation["effectiveDateTime"] == "2024-01-05T10:15:00+01:00"  # ContentDate/Time + the offset
        assert observation["issued"] > "2026"  # analysis time, not acquisition time
    # a suspicious image of another patient: its melanoma score is found, but the demonstration model's
    # melanoma call is no coded diagnosis (value-concept finds nothing), only text marked DEMONSTRATION
    other = consenting_patient(node, "F-3")
    send(node, tmp_path, image("F-3", SUSPICIOUS, accession="ACC-F3"))
    found = wait_for(node, "Observation", {"code": f"{RISK}|probability-of-93655004", "value-quantity": "ge0.5"})
    assert [o["subject"]["reference"] for o in found] == [f"Patient/{other}"]
    assert found[0]["interpretation"][0]["coding"][0]["code"] == "POS"
    assert search(node, "Observation", {"value-concept": MELANOMA}) == []
    called = search(node, "Observation", {"subject": f"Patient/{other}", "code": DIAGNOSIS})
    assert called[0]["valueCodeableConcept"] == {"text": "Malignant melanoma of skin (demonstration model, not a "
                                                         "diagnosis)"}  # fmt: skip
    suspicious = search(node, "Observation", {"subject": f"Patient/{other}", "code": EVERY_CLASS})[0]
    assert suspicious["effectiveDateTime"] == "2024-01-05T10:15:00-05:00"  # no offset: the tenant's zone


def test_a_late_image_on_a_final_report_appends(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "F-4")
    first = image("F-4", BENIGN)
    send(node, tmp_path, first)
    report = report_with(node, patient_id, 1)
    signed = {k: v for k, v in report.items() if k != "meta"} | {
        "status": "final",
        "conclusion": "Benign naevus (Dr Example)",
    }
    assert node.put(f"{BASE}/DiagnosticReport/{report['id']}", json=signed).status_code == 200
    send(node, tmp_path, image("F-4", SUSPICIOUS, study_uid=first.StudyInstanceUID))
    appended = wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}", "status": "appended"})[0]
    assert appended["conclusion"] == "Benign naevus (Dr Example)"  # the clinician's words stay
    assert len(appended["result"]) > len(report["result"])
    notes = [e["valueAnnotation"] for e in appended["extension"] if e["url"].endswith("DiagnosticReport.note")]
    assert any("after the report was final" in n["text"] and "time" in n for n in notes)
    assert_r4(appended)
    review = {"focus": f"DiagnosticReport/{report['id']}", "code": "urn:dermbridge:review-tier|dermatologist"}
    assert [t["status"] for t in search(node, "Task", review)] == ["requested"]  # back in the review queue


def test_a_clinicians_draft_conclusion_stays(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "F-9")
    first = image("F-9", BENIGN)
    send(node, tmp_path, first)
    report = report_with(node, patient_id, 1)
    draft = {k: v for k, v in report.items() if k != "meta"} | {"conclusion": "Dysplastic naevus, excise (draft)"}
    assert node.put(f"{BASE}/DiagnosticReport/{report['id']}", json=draft).status_code == 200
    send(node, tmp_path, image("F-9", SUSPICIOUS, study_uid=first.StudyInstanceUID))
    later = report_with(node, patient_id, len(report["result"]) + 1)
    assert later["conclusion"] == "Dysplastic naevus, excise (draft)" and later["status"] == report["status"]
    notes = [e["valueAnnotation"]["text"] for e in later["extension"] if e["url"].endswith("DiagnosticReport.note")]
    assert any("had a clinician's conclusion" in n for n in notes)


def test_device_model_card_and_provenance(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "F-5")
    send(node, tmp_path, image("F-5", SUSPICIOUS))
    report_with(node, patient_id, 1)
    device = search(node, "Device", {"identifier": "urn:dermbridge:model|dermbridge-demo-abcd@1.0.0"})[0]
    assert device["type"]["coding"][0]["code"] == "Artificial-Intelligence"
    sha = weights_sha256(DEMO_DIR / "models" / "model.pt")
    assert {"system": "urn:dermbridge:model-weights-sha256", "value": sha} in device["identifier"]
    card_ref = next(e["valueReference"]["reference"] for e in device["extension"]
                    if e["url"].endswith("aitransparency.modelCardDescription"))  # fmt: skip
    card = node.get(f"{BASE}/{card_ref}").json()
    assert card["type"]["coding"][0]["code"] == "AIModelCard"
    markdown = base64.b64decode(card["content"][0]["attachment"]["data"]).decode()
    for expected in ("NOT FOR CLINICAL USE", "Patients under 18", "Nail", "Mucosal", "93655004",
                     "Malignant melanoma of skin", "Fitzpatrick", "no clinical performance metrics"):  # fmt: skip
        assert expected in markdown, expected
    diagnosis = search(node, "Observation", {"subject": f"Patient/{patient_id}", "code": DIAGNOSIS})[0]
    provenance = search(node, "Provenance", {"target": f"Observation/{diagnosis['id']}"})[0]
    assert provenance["reason"][0]["coding"][0]["code"] == "AIAST"
    assert "security" not in provenance["meta"]  # the server's record about the AI, not an AI assertion
    report = search(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}"})[0]
    versions = [t["reference"] for t in provenance["target"] if t["reference"].startswith("DiagnosticReport/")]
    assert len(versions) == 1 and versions[0].startswith(f"DiagnosticReport/{report['id']}/_history/")
    concluded = node.get(f"{BASE}/{versions[0]}").json()  # the version whose conclusion the AI wrote
    assert concluded["conclusion"] == report["conclusion"] and concluded["status"] == report["status"]
    # the explanations came after (findings first): they only added the ABCD result, never the conclusion
    added = {r["reference"] for r in report["result"]} - {r["reference"] for r in concluded["result"]}
    abcd = search(node, "Observation", {"subject": f"Patient/{patient_id}", "code": "urn:dermbridge:abcd|abc-partial"})
    assert added == {f"Observation/{o['id']}" for o in abcd} and len(abcd) == 1
    assert f"Observation/{diagnosis['id']}" in {r["reference"] for r in concluded["result"]}
    assert "AI analysis by " in diagnosis["method"]["text"] and diagnosis["device"]["display"].endswith("1.0.0")
    maps = [m for m in search(node, "Media", {"subject": f"Patient/{patient_id}"})
            if m["partOf"][0]["reference"].startswith("Media/")]  # fmt: skip
    assert maps and all({t["code"] for t in m["meta"]["tag"]} == {"demonstration"} for m in maps)
    assert provenance["agent"][0]["role"][0]["coding"][0]["code"] == "Artificial-Intelligence"
    entities = {e["what"]["reference"].split("/")[0]: e["role"] for e in provenance["entity"]}
    assert entities == {"ImagingStudy": "derivation", "Media": "derivation", "DocumentReference": "derivation"}
    consent = search(node, "Consent", {"patient": f"Patient/{patient_id}"})[0]
    assert provenance["policy"] == [f"Consent/{consent['id']}"]
    written = ("ImagingStudy", "Media", "BodyStructure", "Observation", "DiagnosticReport", "Device",
               "DocumentReference", "Provenance")  # fmt: skip
    for resource_type in written:  # everything the sync and the AI wrote, saliency Media included
        found = search(node, resource_type, {})
        assert found, resource_type
        for resource in found:
            assert_r4(resource)


def swapped_weights(tmp_path: Path) -> Path:
    """The demo bundle, same card (id and version), other weights."""
    bundle = tmp_path / "swapped"
    shutil.copytree(DEMO_DIR, bundle)
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 0.01
    torch.save(state, bundle / "models" / "model.pt")
    return bundle


def test_swapped_weights_are_a_new_device(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"inference_enabled": True, "dicom_any_ae_tenant": "default"}
    with make_client(tmp_path / "var", **settings) as node:
        patient_id = consenting_patient(node, "F-6")
        send(node, tmp_path, image("F-6", BENIGN))
        report_with(node, patient_id, 1)
    with make_client(tmp_path / "var", inference_models=[swapped_weights(tmp_path)], **settings) as node:
        send(node, tmp_path, image("F-6", BENIGN, accession="ACC-F6B"))
        devices = wait_for(node, "Device", {"identifier": "urn:dermbridge:model|dermbridge-demo-abcd@1.0.0"}, 2)
        digests = {i["value"] for d in devices for i in d["identifier"] if i["system"].endswith("weights-sha256")}
        assert len(digests) == 2


def test_lesions_keep_their_identity_across_visits(tmp_path: Path) -> None:
    settings = {"dicom_any_ae_tenant": "default", "dicom_lesion_key": {"default": "SeriesDescription"}}
    with make_client(tmp_path / "var", **settings) as node:
        visit1 = image("F-7", BENIGN, accession="V1")
        visit1.SeriesDescription, visit1.ImageLaterality = "Lesion A", "L"
        visit1.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_code("40415009", "Proximal")]
        visit2 = image("F-7", SUSPICIOUS, accession="V2", study_date="20240705")
        visit2.SeriesDescription, visit2.ImageLaterality = "Lesion A", "L"
        visit2.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_code("40415009", "Proximal")]
        other = image("F-7", BENIGN, accession="V2", study_uid=visit2.StudyInstanceUID)
        other.SeriesDescription, other.ImageLaterality = "Lesion B", "L"
        send(node, tmp_path, visit1, visit2, other)
        lesions = search(node, "BodyStructure", {})
        assert len(lesions) == 2  # Lesion A (two visits, two studies) and Lesion B
        lesion_a = next(b for b in lesions if "Lesion A" in b["description"])
        assert lesion_a["location"]["coding"][0] == {"system": SCT, "code": "39937001", "display": "Skin structure"}
        assert [q["coding"][0]["code"] for q in lesion_a["locationQualifier"]] == ["40415009", "7771000"]
        studies = search(node, "ImagingStudy", {})
        assert len(studies) == 2
        for study in studies:
            for series in study["series"]:
                assert series["bodySite"]["code"] == "39937001" and series["laterality"]["code"] == "7771000"
            assert_r4(study)
        for lesion in lesions:
            assert_r4(lesion)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def test_an_event_that_does_not_name_its_lesion_finds_it(node: FhirTestClient, tmp_path: Path) -> None:
    """Events queued before lesions existed (or re-queued without the field) focus the same lesion."""
    running = worker(node)
    node.portal.call(running.stop)  # drive it by hand
    patient_id = consenting_patient(node, "F-8")
    send(node, tmp_path, image("F-8", BENIGN))
    store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]

    async def without_lesion() -> None:
        events = [e for e in await store.claim_events(CONSUMER, 100, 60) if e.topic == TOPIC]
        await store.ack_events(CONSUMER, [e.seq for e in events])
        async with store.transaction() as tx:
            for event in events:
                await tx.append_event(event.topic, {k: v for k, v in event.payload.items() if k != "lesion"})

    node.portal.call(without_lesion)
    node.portal.call(running.drain)
    lesions = search(node, "BodyStructure", {"patient": f"Patient/{patient_id}"})
    assert len(lesions) == 1
    risk = search(node, "Observation", {"subject": f"Patient/{patient_id}", "code": EVERY_CLASS})
    assert len(risk) == 2 and {o["focus"][0]["reference"] for o in risk} == {f"BodyStructure/{lesions[0]['id']}"}
