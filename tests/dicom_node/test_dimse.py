"""The DIMSE SCP driven by dcmtk's echoscu, storescu, findscu, getscu and movescu."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.attributes import INSTANCE
from dicom_node.blobs import BlobKey
from tests.conftest import BLOB_STORES, engine_settings
from tests.dicom_factories import SYNTAXES, VL_PHOTOGRAPHIC, dermoscopic, write
from tests.dicom_node.conftest import DicomNode

pytestmark = pytest.mark.interop
# storescu options that propose exactly one transfer syntax
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
}
BASE = "/fhir/default"


@pytest.fixture(params=BLOB_STORES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """DICOM ingest (index, FHIR sync, outbox) runs on every engine, with the objects in files or in PostgreSQL."""
    return engine_settings(request)


def test_echo(node: DicomNode) -> None:
    result = node.run("echoscu")
    assert result.returncode == 0, result.stderr


def test_unknown_calling_ae_is_rejected(node: DicomNode) -> None:
    result = node.run("echoscu", aet="STRANGER")
    assert result.returncode != 0
    assert "Rejected" in result.stderr or "reject" in result.stderr.lower()


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_store_every_transfer_syntax_as_received(node: DicomNode, tmp_path: Path, syntax: pydicom.uid.UID) -> None:
    path = write(dermoscopic(syntax=syntax), tmp_path / "in")
    # propose exactly the file's transfer syntax, so that the wire carries it unchanged
    result = node.run("storescu", "-R", STORESCU_PROPOSE[str(syntax)], str(path))
    assert result.returncode == 0, result.stderr
    ds = pydicom.dcmread(path)
    key = BlobKey("default", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    at_rest = node.client.portal.call(node.client.app.state.ingestor.blobs.read, key)  # type: ignore[union-attr,attr-defined]
    assert at_rest.startswith(b"DBB1") and ds.PixelData not in at_rest  # sealed at rest, wherever it is kept
    in_files = (node.data_dir / "blobs" / "default" / ds.StudyInstanceUID).exists()
    assert in_files == (node.client.app.state.settings.blobs != "postgresql")  # type: ignore[attr-defined]
    kept = node.stored(ds.SOPInstanceUID)
    assert kept.file_meta.TransferSyntaxUID == syntax
    assert kept.PixelData == ds.PixelData  # no transcoding


def test_store_syncs_fhir_and_appends_the_event(node: DicomNode, tmp_path: Path) -> None:
    study = pydicom.uid.generate_uid()
    first = write(dermoscopic(study_uid=study, seed=1), tmp_path)
    second = write(dermoscopic(study_uid=study, series_uid=pydicom.dcmread(first).SeriesInstanceUID, seed=2), tmp_path)
    result = node.run("storescu", str(first), str(second))
    assert result.returncode == 0, result.stderr
    client = node.client
    patients = client.get(f"{BASE}/Patient", params={"identifier": "urn:clinic:mrn|DERM0001"}).json()
    assert patients["total"] == 1
    patient = patients["entry"][0]["resource"]
    assert patient["name"][0]["family"] == "MUSTER" and patient["birthDate"] == "1970-05-02"
    studies = client.get(f"{BASE}/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study}"}).json()
    assert studies["total"] == 1
    imaging = studies["entry"][0]["resource"]
    assert imaging["numberOfInstances"] == 2 and imaging["numberOfSeries"] == 1
    assert imaging["subject"]["reference"] == f"Patient/{patient['id']}"
    media = client.get(f"{BASE}/Media", params={"subject": patient["id"]}).json()
    assert media["total"] == 2
    assert media["entry"][0]["resource"]["bodySite"]["coding"][0]["code"] == "39937001"
    assert "/rendered" in media["entry"][0]["resource"]["content"]["url"]
    reports = client.get(f"{BASE}/DiagnosticReport", params={"subject": patient["id"]}).json()
    assert reports["total"] == 1
    report = reports["entry"][0]["resource"]
    assert report["status"] == "registered" and len(report["media"]) == 2
    endpoint = client.get(f"{BASE}/Endpoint").json()["entry"][0]["resource"]
    assert endpoint["address"].endswith("/dicomweb/default")

    async def claim() -> list:
        store = await node.client.app.state.engine.tenant("default")  # type: ignore[attr-defined]
        return await store.claim_events("test", 100, 30)

    events = node.client.portal.call(claim)  # type: ignore[union-attr]
    stored = [e for e in events if e.topic == "imaging.instance-stored"]
    assert len(stored) == 2
    assert {e.payload["report"] for e in stored} == {report["id"]}


def test_patient_is_never_duplicated_under_concurrency(node: DicomNode, tmp_path: Path) -> None:
    folders = []
    for n in range(3):
        folder = tmp_path / f"sender{n}"
        for m in range(3):
            write(dermoscopic(patient_id="CONCURRENT", seed=n * 10 + m), folder)
        folders.append(folder)
    command = ["storescu", "-R", "-aet", "STORESCU", "-aec", "DERMBRIDGE", "+sd", "127.0.0.1", str(node.port)]
    senders = [
        subprocess.Popen([*command, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for folder in folders
    ]
    for sender in senders:
        _, errors = sender.communicate(timeout=120)
        assert sender.returncode == 0, errors
    found = node.client.get(f"{BASE}/Patient", params={"identifier": "urn:clinic:mrn|CONCURRENT"}).json()
    assert found["total"] == 1


def test_duplicate_sop_instance_is_kept_by_default(node: DicomNode, tmp_path: Path) -> None:
    original = dermoscopic(seed=1)
    path = write(original, tmp_path / "a")
    assert node.run("storescu", str(path)).returncode == 0
    changed = dermoscopic(seed=2, sop_uid=original.SOPInstanceUID, study_uid=original.StudyInstanceUID,
                          series_uid=original.SeriesInstanceUID, patient_name="OTHER^NAME")  # fmt: skip
    again = write(changed, tmp_path / "b")
    assert node.run("storescu", str(again)).returncode == 0
    assert node.stored(original.SOPInstanceUID).PatientName == "MUSTER^ANNA"
    studies = node.client.get(f"{BASE}/ImagingStudy").json()
    assert studies["entry"][0]["resource"]["numberOfInstances"] == 1


def test_find_at_every_level(node: DicomNode, tmp_path: Path) -> None:
    study = pydicom.uid.generate_uid()
    a = dermoscopic(study_uid=study, seed=1, study_date="20240105")
    b = dermoscopic(study_uid=study, series_uid=a.SeriesInstanceUID, seed=2, study_date="20240105")
    c = dermoscopic(patient_id="DERM0002", patient_name="ROE^BEN", seed=3, study_date="20230301")
    node.run("storescu", *(str(write(ds, tmp_path)) for ds in (a, b, c)), check=True)

    def find(level: str, *keys: str, root: str = "-S") -> list[str]:
        args = [root, "-k", f"QueryRetrieveLevel={level}", *[x for k in keys for x in ("-k", k)]]
        result = node.run("findscu", *args)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stderr.splitlines() if "Find Response" in line]

    assert len(find("STUDY", "PatientName=muster*", "StudyInstanceUID")) == 1
    assert len(find("STUDY", "PatientName=MUSTER", "StudyInstanceUID")) == 1
    assert len(find("STUDY", "StudyDate=20240101-20241231", "StudyInstanceUID")) == 1
    assert len(find("STUDY", "StudyDate=-20231231", "StudyInstanceUID")) == 1
    assert len(find("STUDY", "StudyDate=", "StudyInstanceUID")) == 2  # universal matching
    assert len(find("STUDY", f"StudyInstanceUID={study}\\{c.StudyInstanceUID}")) == 2
    assert len(find("SERIES", f"StudyInstanceUID={study}", "SeriesInstanceUID", "Modality")) == 1
    assert len(find("IMAGE", f"StudyInstanceUID={study}", f"SeriesInstanceUID={a.SeriesInstanceUID}",
                    "SOPInstanceUID")) == 2  # fmt: skip
    assert len(find("PATIENT", "PatientID=DERM*", "PatientName", root="-P")) == 2
    detail = node.run(
        "findscu",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        "NumberOfStudyRelatedInstances",
        "-k",
        "ModalitiesInStudy",
        "-k",
        "PatientName",
    )
    assert re.search(r"\(0020,1208\) IS \[2 ?\]", detail.stderr)
    assert "DMS" in detail.stderr and "MUSTER^ANNA" in detail.stderr


def test_get_retrieves_on_the_same_association(node: DicomNode, tmp_path: Path) -> None:
    ds = dermoscopic(sop_class=VL_PHOTOGRAPHIC)  # getscu's built-in context list predates Dermoscopic Photography
    node.run("storescu", str(write(ds, tmp_path / "in")), check=True)
    out = tmp_path / "out"
    out.mkdir()
    result = node.run("getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                      "-od", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    received = list(out.iterdir())
    assert len(received) == 1
    assert pydicom.dcmread(received[0]).SOPInstanceUID == ds.SOPInstanceUID


def test_move_to_a_configured_destination(node: DicomNode, tmp_path: Path) -> None:
    ds = dermoscopic(sop_class=VL_PHOTOGRAPHIC)
    node.run("storescu", str(write(ds, tmp_path / "in")), check=True)
    out = tmp_path / "moved"
    out.mkdir()
    receiver = subprocess.Popen(["storescp", "-aet", "MOVEDEST", "-od", str(out), str(node.move_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)
        result = node.run("movescu", "-S", "-aem", "MOVEDEST", "-k", "QueryRetrieveLevel=SERIES",
                          "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                          "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}")  # fmt: skip
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while not list(out.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(out.iterdir())) == 1
        unknown = node.run("movescu", "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={ds.StudyInstanceUID}")  # fmt: skip
        assert "MoveDestinationUnknown" in unknown.stderr
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def test_each_tenant_sees_only_its_own_images(node: DicomNode, tmp_path: Path) -> None:
    node.run("storescu", str(write(dermoscopic(), tmp_path)), check=True)
    client = node.client
    from fhir_server.storage.query import RecordQuery

    async def north_instances() -> int:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        await engine.create_tenant("north")
        return len(await (await engine.tenant("north")).find_records(RecordQuery(INSTANCE)))

    assert client.portal.call(north_instances) == 0  # type: ignore[union-attr]
    result = node.run("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", aet="OTHERCLINIC")
    assert "Find Response" not in result.stderr


def test_images_join_the_case_ordered_by_accession(node: DicomNode, tmp_path: Path) -> None:
    """An EHR opened the case (DiagnosticReport with the order's accession) before the images came; the modality
    worklist put the order's patient identifier (and issuer) and accession in the image, so ingest matches the
    case's own Patient and the image joins the case (IHE SWF)."""
    client = node.client
    ehr_patient = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "DERM0001"}]}
    patient = client.post(f"{BASE}/Patient", json=ehr_patient).json()
    case = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:dermbridge:accession", "value": "ORDER-77"}],
        "status": "registered",
        "code": {"text": "Dermoscopy review"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    opened = client.post(f"{BASE}/DiagnosticReport", json=case).json()
    node.run("storescu", str(write(dermoscopic(accession="ORDER-77"), tmp_path)), check=True)
    reports = client.get(f"{BASE}/DiagnosticReport").json()
    assert reports["total"] == 1
    report = reports["entry"][0]["resource"]
    assert report["id"] == opened["id"]
    assert len(report["media"]) == 1 and len(report["imagingStudy"]) == 1
    assert client.get(f"{BASE}/Patient").json()["total"] == 1  # the image's patient is the order's


def test_a_study_s_later_images_find_its_resources_even_after_they_changed(node: DicomNode, tmp_path: Path) -> None:
    """The node remembers which FHIR resources a study went to; a remembered resource that was
    deleted meanwhile is not reused, and the study's later images are synced as on first sight."""
    client = node.client
    study = pydicom.uid.generate_uid()
    first = dermoscopic(study_uid=study, seed=1)
    node.run("storescu", str(write(first, tmp_path / "a")), check=True)
    reports = client.get(f"{BASE}/DiagnosticReport").json()["entry"]
    assert client.delete(f"{BASE}/DiagnosticReport/{reports[0]['resource']['id']}").status_code in (200, 204)
    second = dermoscopic(study_uid=study, series_uid=first.SeriesInstanceUID, seed=2)
    third = dermoscopic(study_uid=study, series_uid=first.SeriesInstanceUID, seed=3)
    node.run("storescu", str(write(second, tmp_path / "b")), str(write(third, tmp_path / "c")), check=True)
    live = client.get(f"{BASE}/DiagnosticReport").json()
    assert live["total"] == 1 and live["entry"][0]["resource"]["id"] != reports[0]["resource"]["id"]
    assert len(live["entry"][0]["resource"]["media"]) == 2  # the images after the deletion
    studies = client.get(f"{BASE}/ImagingStudy").json()
    assert studies["total"] == 1 and studies["entry"][0]["resource"]["numberOfInstances"] == 3
    assert client.get(f"{BASE}/Patient").json()["total"] == 1
