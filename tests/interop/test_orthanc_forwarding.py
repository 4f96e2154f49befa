"""Forwarding to a real PACS (issue 17): Orthanc receives what the tenant's rules send, as a C-STORE SCU from
DermBridge driven by the outbox; an unreachable destination neither blocks the others nor retries for ever;
an Orthanc that takes only uncompressed objects gets a JPEG image decompressed; every job's state is served
over HTTP under the one AccessPolicy; each attempt is an "Export" AuditEvent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dicom_node.derived import StudyHome, store_derived
from dicom_node.forwarding.config import set_forwarding
from dicom_node.forwarding.events import CLINICIAN_DECISIONS, DerivedOrigin
from dicom_node.sop_classes import COMPREHENSIVE_3D_SR, SEGMENTATION
from inference.demo import DEMO_DIR
from inference.dicom_results import build
from inference.loaders import load_model
from inference.synthetic import lesion_image, random_spec
from tests.conftest import FhirTestClient, make_client
from tests.dicom_factories import DERMOSCOPIC_PHOTOGRAPHY, dermoscopic, stow_body, with_pixels
from tests.inference.test_worker import SALIENCY, consenting_patient, lesion_instance, send, wait_for
from tests.orthanc import UNCOMPRESSED, Orthanc, running_orthanc
from tests.server import free_port

pytestmark = pytest.mark.interop
JOBS = "/forwarding/default/jobs"
DEADLINE = 120.0


def configure(node: FhirTestClient, config: dict[str, Any] | None) -> None:
    store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    node.portal.call(set_forwarding, store, config)


def jobs(node: FhirTestClient, **params: str) -> list[dict[str, Any]]:
    response = node.get(JOBS, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["jobs"])


def wait_jobs(
    node: FhirTestClient, done: Callable[[list[dict[str, Any]]], bool], **params: str
) -> list[dict[str, Any]]:
    """The jobs once ``done`` holds for them (a bounded wait on a condition)."""
    deadline = time.monotonic() + DEADLINE
    while not done(found := jobs(node, **params)):
        assert time.monotonic() < deadline, f"forwarding jobs after {DEADLINE} s: {found}"
        time.sleep(0.1)
    return found


def stow(node: FhirTestClient, *datasets: Any) -> None:
    body, media = stow_body(*datasets)
    assert node.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media}).status_code == 200


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", dicom_any_ae_tenant="default") as client:
        yield client


def test_images_sr_and_seg_arrive_in_orthanc_after_the_ai(tmp_path: Path, orthanc: Orthanc) -> None:
    with make_client(tmp_path / "ai", inference_enabled=True, dicom_any_ae_tenant="default") as node:
        every = ["malignant", "pre-malignant", "benign", "indeterminate"]
        configure(node, {"destinations": {"orthanc": orthanc.destination(), "onco": orthanc.destination()},
                         "rules": [{"destination": "orthanc", "objects": ["images", "ai-results"]},
                                   {"destination": "onco", "objects": ["images"], "outcomes": every}]})  # fmt: skip
        patient_id = consenting_patient(node, "FW-1")
        image = lesion_instance("FW-1", seed=31)
        send(node, tmp_path, image)  # storescu, as a dermatoscope does
        wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})  # SR and SEG stored
        received = orthanc.wait_for_instances(3)
        # Orthanc's REST API: the image, the TID 1500 SR and the SEG, of the image's study
        assert received[str(image.SOPInstanceUID)] == str(image.SOPClassUID)
        assert sorted(received.values()) == sorted([str(image.SOPClassUID), COMPREHENSIVE_3D_SR, SEGMENTATION])
        [study] = orthanc.get("/studies")
        assert orthanc.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"] == str(image.StudyInstanceUID)
        done = wait_jobs(node, lambda found: len(found) == 3 and all(j["state"] == "sent" for j in found),
                         destination="orthanc")  # fmt: skip
        assert {j["kind"] for j in done} == {"images", "ai-results"}
        # a rule naming outcomes sends the image once the AI's result on it is stored (after its SR or SEG)
        [onco] = wait_jobs(node, lambda found: len(found) == 1 and found[0]["state"] == "sent", destination="onco")
        assert onco["instance"] == str(image.SOPInstanceUID)
        [image_job] = [j for j in done if j["kind"] == "images"]  # made when the image was stored, before the AI ran
        assert image_job["created"] < min(j["created"] for j in done if j["kind"] == "ai-results") <= onco["created"]
        assert all(j["dimseStatus"] == "0x0000" and j["attempts"] == 1 and j["destinationAE"] == "ORTHANC"
                   for j in done)  # fmt: skip
        # each attempt is audited as a DICOM Export naming the study and the destination
        audit = node.get("/fhir/default/AuditEvent", params={"subtype": "dicom-forwarding", "_count": "50"}).json()
        events = [e["resource"] for e in audit["entry"]]
        assert events and all(e["type"]["code"] == "110106" and e["outcome"] == "0" for e in events)
        assert {e["agent"][1]["altId"] for e in events} == {"ORTHANC"}
        assert f"urn:oid:{image.StudyInstanceUID}" in {e["entity"][0]["what"]["identifier"]["value"] for e in events}


def test_an_unreachable_destination_blocks_no_other_and_fails_after_its_attempts(
    node: FhirTestClient, orthanc: Orthanc
) -> None:
    dead = {"aeTitle": "NOBODY", "host": "127.0.0.1", "port": free_port(), "timeoutSeconds": 2}
    configure(node, {"destinations": {"dead": dead, "orthanc": orthanc.destination()},
                     "rules": [{"destination": "dead"}, {"destination": "orthanc"}],
                     "maxAttempts": 3, "retrySeconds": 0.2})  # fmt: skip
    images = [dermoscopic(patient_id="FW-2", sop_uid=f"1.2.826.0.1.3680043.10.543.2.{n}", seed=n) for n in (1, 2)]
    stow(node, *images)
    assert set(orthanc.wait_for_instances(2)) == {str(ds.SOPInstanceUID) for ds in images}
    failed = wait_jobs(node, lambda found: len(found) == 2 and all(j["state"] == "failed" for j in found),
                       destination="dead")  # fmt: skip
    for job in failed:  # bounded: three attempts, then a recorded failure with its reason
        assert job["attempts"] == 3 and "no association with NOBODY@127.0.0.1" in job["lastError"]
        assert "dimseStatus" not in job
    assert [j["state"] for j in jobs(node, destination="orthanc")] == ["sent", "sent"]
    assert len(jobs(node, state="failed")) == 2 and len(jobs(node, state="sent")) == 2
    # the failed attempts are audited too (outcome 8: none stored)
    audit = node.get("/fhir/default/AuditEvent", params={"subtype": "dicom-forwarding", "outcome": "8"}).json()
    assert audit["total"] >= 1

    # an operator's retry once the PACS is reachable: the job runs again from its first attempt
    job_id = failed[0]["id"]
    configure(node, {"destinations": {"dead": orthanc.destination(), "orthanc": orthanc.destination()},
                     "rules": [{"destination": "orthanc"}]})  # fmt: skip
    retried = node.post(f"{JOBS}/{job_id}/$retry")
    assert retried.status_code == 202 and retried.json()["state"] == "pending"
    assert node.post(f"{JOBS}/{job_id}/$retry").status_code in (202, 409)  # pending (409) unless already sent
    wait_jobs(node, lambda found: bool(found), destination="dead", state="sent")
    retries = node.get("/fhir/default/AuditEvent", params={"subtype": "dicom-forwarding-retry"}).json()
    assert retries["total"] >= 1 and job_id in retries["entry"][0]["resource"]["outcomeDesc"]
    assert node.get(f"{JOBS}/{job_id}").json()["attempts"] == 1


def test_an_orthanc_taking_only_uncompressed_gets_the_jpeg_decompressed(node: FhirTestClient, tmp_path: Path) -> None:
    with (running_orthanc(tmp_path / "plain", "PLAIN", AcceptedTransferSyntaxes=UNCOMPRESSED) as plain,
          running_orthanc(tmp_path / "any", "ANY") as anything):  # fmt: skip
        configure(node, {"destinations": {"plain": plain.destination(), "any": anything.destination()},
                         "rules": [{"destination": "plain"}, {"destination": "any"}]})  # fmt: skip
        image = dermoscopic(patient_id="FW-3", syntax=JPEGBaseline8Bit, seed=3)
        stow(node, image)
        uid = str(image.SOPInstanceUID)
        plain.wait_for_instances(1)
        anything.wait_for_instances(1)
        assert plain.transfer_syntax(uid) == ExplicitVRLittleEndian  # decompressed for the one that needs it
        assert anything.transfer_syntax(uid) == JPEGBaseline8Bit  # as stored for the one that takes it
        sent = {j["destination"]: j for j in wait_jobs(node, lambda f: all(j["state"] == "sent" for j in f) and
                                                       len(f) == 2)}  # fmt: skip
        assert sent["plain"]["transferSyntax"] == ExplicitVRLittleEndian
        assert sent["any"]["transferSyntax"] == JPEGBaseline8Bit


def test_rules_by_calling_ae_and_sop_class(node: FhirTestClient, tmp_path: Path, orthanc: Orthanc) -> None:
    configure(node, {"destinations": {"all": orthanc.destination(), "ward": orthanc.destination(),
                                      "photos": orthanc.destination()},
                     "rules": [{"destination": "all"}, {"destination": "ward", "callingAE": "WARD-CAM"},
                               {"destination": "photos", "sopClasses": [DERMOSCOPIC_PHOTOGRAPHY]}]})  # fmt: skip
    send(node, tmp_path, dermoscopic(patient_id="FW-4", seed=4))  # from DERMATOSCOPE, not WARD-CAM
    found = wait_jobs(node, lambda f: len(f) == 2 and all(j["state"] == "sent" for j in f))
    assert sorted(j["destination"] for j in found) == ["all", "photos"]  # the planner has seen the image
    # erasing the patient removes its forwarding jobs too (UIDs of its objects)
    [study] = node.get("/fhir/default/ImagingStudy").json()["entry"]
    patient = study["resource"]["subject"]["reference"]
    assert node.post(f"/fhir/default/{patient}/$erase").status_code == 200
    assert jobs(node) == []


def test_the_status_is_the_access_policys(node: FhirTestClient) -> None:
    assert node.get(JOBS, headers={"Authorization": ""}).status_code == 401
    reviewer = {"Authorization": f"Bearer {node.token(roles=('clinician-reviewer',))}"}
    assert node.get(JOBS, headers=reviewer).status_code == 200  # user/ read on ImagingStudy and Patient
    assert node.post(f"{JOBS}/x:1.2/$retry", headers=reviewer).status_code == 403  # no update on ImagingStudy
    device = {"Authorization": f"Bearer {node.token(roles=('imaging-device',))}"}
    refused = node.get(JOBS, headers=device)  # ImagingStudy without Patient, as for QIDO-RS
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert node.get(f"{JOBS}/x:1.2").status_code == 404
    assert node.get(JOBS, params={"state": "lost"}).status_code == 400
    assert node.get("/forwarding/nowhere/jobs").status_code == 404


def test_a_clinician_decision_stored_as_such_goes_by_its_kind(node: FhirTestClient, orthanc: Orthanc) -> None:
    """The seam the sign-off export uses: an object stored with ``DerivedOrigin(CLINICIAN_DECISIONS)`` is matched
    by the rules naming that kind (here an SR standing in for the decision's), not by those for AI results."""
    configure(node, {"destinations": {"pacs": orthanc.destination(), "ai": orthanc.destination()},
                     "rules": [{"destination": "pacs", "objects": ["clinician-decisions"]},
                               {"destination": "ai", "objects": ["ai-results"]}]})  # fmt: skip
    pixels = lesion_image(random_spec(np.random.default_rng(5), 128, True), 128, seed=5)
    image = with_pixels(dermoscopic(patient_id="FW-6", seed=6), pixels)
    stow(node, image)
    imaging = node.get("/fhir/default/ImagingStudy").json()["entry"][0]["resource"]
    report = node.get("/fhir/default/DiagnosticReport").json()["entry"][0]["resource"]
    home = StudyHome(imaging["subject"]["reference"].split("/")[1], imaging["id"], report["id"])
    decision = build(image, load_model(DEMO_DIR).card, [0.4, 0.6], None, server_version="test", weights_sha256="",
                     lesion="Lesion at Skin structure", lesion_key="lesion-6").sr  # fmt: skip
    store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    blobs = node.app.state.ingestor.blobs  # type: ignore[attr-defined]
    origin = DerivedOrigin(CLINICIAN_DECISIONS, str(image.SOPInstanceUID))
    assert node.portal.call(partial(store_derived, store, blobs, decision, home, title="decision", origin=origin))
    [job] = wait_jobs(node, lambda found: len(found) == 1 and found[0]["state"] == "sent")
    assert (job["destination"], job["kind"], job["instance"]) == ("pacs", "clinician-decisions",
                                                                  str(decision.SOPInstanceUID))  # fmt: skip
    assert orthanc.wait_for_instances(1) == {str(decision.SOPInstanceUID): COMPREHENSIVE_3D_SR}


def test_a_replacing_version_is_forwarded_again_and_an_identical_resend_is_not(tmp_path: Path) -> None:
    """With ``dicom_duplicates = "replace"`` a re-sent SOP Instance UID replaces the stored object; its job was
    ``sent`` already, so the destination kept the old version. Now a version with other content (another SHA-256 of
    the stored bytes) reopens the job; the same bytes again forward nothing."""
    with (make_client(tmp_path / "var", dicom_any_ae_tenant="default", dicom_duplicates="replace") as node,
          running_orthanc(tmp_path / "pacs", OverwriteInstances=True) as pacs):  # fmt: skip
        configure(node, {"destinations": {"pacs": pacs.destination()}, "rules": [{"destination": "pacs"}]})
        study, series, sop = (f"1.2.826.0.1.3680043.10.543.9.{n}" for n in (1, 2, 3))
        first = dermoscopic(patient_id="FW-R", study_uid=study, series_uid=series, sop_uid=sop, seed=1)
        first.ImageComments = "version 1"
        stow(node, first)
        [sent] = wait_jobs(node, lambda found: len(found) == 1 and found[0]["state"] == "sent")
        second = dermoscopic(patient_id="FW-R", study_uid=study, series_uid=series, sop_uid=sop, seed=2)
        second.ImageComments = "version 2"
        stow(node, second)
        [resent] = wait_jobs(node, lambda found: len(found) == 1 and found[0]["state"] == "sent"
                             and found[0]["sent"] != sent["sent"])  # fmt: skip
        assert resent["attempts"] == 1 and resent["id"] == sent["id"]
        [orthanc_id] = pacs.get("/instances")
        assert pacs.get(f"/instances/{orthanc_id}/simplified-tags")["ImageComments"] == "version 2"

        stow(node, second)  # the same bytes again
        marker = dermoscopic(patient_id="FW-R", study_uid=study, series_uid=series, seed=3)  # planned after it
        stow(node, marker)
        wait_jobs(node, lambda found: len(found) == 2 and all(j["state"] == "sent" for j in found))
        assert node.get(f"{JOBS}/{sent['id']}").json()["sent"] == resent["sent"]  # not sent a third time
