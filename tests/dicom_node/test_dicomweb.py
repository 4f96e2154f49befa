"""DICOMweb (STOW-RS, QIDO-RS, WADO-RS) driven by the dicomweb-client library over a real socket."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from requests.exceptions import HTTPError

from tests.conftest import make_client
from tests.dicom_factories import SYNTAXES, dermoscopic
from tests.server import Server, running_server

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module", params=("files", "postgresql-blobs"))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server with its objects in files (on SQLite), or inside PostgreSQL (``blobs=postgresql``)."""
    env = {}
    if request.param == "postgresql-blobs":
        env = {"DERMBRIDGE_STORAGE": request.getfixturevalue("postgres_server").create_database(),
               "DERMBRIDGE_BLOBS": "postgresql"}  # fmt: skip
    with running_server(tmp_path_factory.mktemp("dicomweb") / "var", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> DICOMwebClient:
    return DICOMwebClient(f"{server.root}/dicomweb/default", headers=server.headers)


@pytest.fixture(scope="module")
def study(client: DICOMwebClient) -> list[pydicom.Dataset]:
    """One study of seven instances, one per transfer syntax, stored through STOW-RS."""
    study_uid, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    datasets = [
        dermoscopic(study_uid=study_uid, series_uid=series_uid, syntax=syntax, seed=n, patient_id="WEB1",
                    patient_name="WEBER^EVA")
        for n, syntax in enumerate(SYNTAXES)
    ]  # fmt: skip
    for n, ds in enumerate(datasets):
        ds.InstanceNumber = n + 1
    response = client.store_instances(datasets)
    referenced = response.ReferencedSOPSequence
    assert len(referenced) == len(datasets)
    assert "FailedSOPSequence" not in response
    return datasets


def test_stow_syncs_fhir(server: Server, study: list[pydicom.Dataset]) -> None:
    uid = study[0].StudyInstanceUID
    found = server.http.get(
        f"{server.root}/fhir/default/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}
    )
    imaging = found.json()["entry"][0]["resource"]
    assert imaging["numberOfInstances"] == len(study)


def test_stow_reports_failures(server: Server, study: list[pydicom.Dataset]) -> None:
    incomplete = dermoscopic()
    del incomplete.Modality
    good = dermoscopic()
    buffers = []
    for ds in (incomplete, good):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffers.append(buffer.getvalue())
    boundary = "b0undary"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b + b"\r\n" for b in buffers)
    body += f"--{boundary}--\r\n".encode()
    response = server.http.post(
        f"{server.root}/dicomweb/default/studies",
        content=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert response.status_code == 202
    result = response.json()
    assert len(result["00081199"]["Value"]) == 1
    failure = result["00081198"]["Value"][0]
    assert failure["00081197"]["Value"] == [0xA900]
    assert "Modality" in failure["00000902"]["Value"][0]
    garbage = server.http.post(
        f"{server.root}/dicomweb/default/studies",
        content=b"--x\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--x--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
    )
    assert garbage.status_code == 409
    wrong_type = server.http.post(
        f"{server.root}/dicomweb/default/studies", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert wrong_type.status_code == 415


def test_qido(client: DICOMwebClient, study: list[pydicom.Dataset]) -> None:
    uid, series = study[0].StudyInstanceUID, study[0].SeriesInstanceUID
    studies = client.search_for_studies(search_filters={"PatientName": "weber*"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [uid]
    assert studies[0]["00201208"]["Value"] == [len(study)]  # NumberOfStudyRelatedInstances
    assert client.search_for_studies(search_filters={"StudyDate": "20240101-20240131", "PatientID": "WEB1"})
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    found_series = client.search_for_series(study_instance_uid=uid)
    assert [s["0020000E"]["Value"][0] for s in found_series] == [series]
    instances = client.search_for_instances(study_instance_uid=uid, series_instance_uid=series)
    assert len(instances) == len(study)
    page = client.search_for_instances(study_instance_uid=uid, limit=3, offset=2)
    assert len(page) == 3
    by_tag = client.search_for_instances(study_instance_uid=uid, search_filters={"00080018": study[2].SOPInstanceUID})
    assert len(by_tag) == 1
    assert by_tag[0]["00081190"]["Value"][0].endswith(f"/instances/{study[2].SOPInstanceUID}")


def test_wado_instances_and_study(client: DICOMwebClient, study: list[pydicom.Dataset]) -> None:
    for ds in study:
        got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert got.PixelData == ds.PixelData
    everything = client.retrieve_study(study[0].StudyInstanceUID)
    assert {d.SOPInstanceUID for d in everything} == {d.SOPInstanceUID for d in study}


def test_wado_metadata(client: DICOMwebClient, study: list[pydicom.Dataset]) -> None:
    ds = study[0]
    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert metadata["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert "BulkDataURI" in metadata["7FE00010"]
    series = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(series) == len(study)


def test_wado_frames_and_rendered(client: DICOMwebClient, server: Server, study: list[pydicom.Dataset]) -> None:
    native = study[0]  # explicit VR little endian
    frames = client.retrieve_instance_frames(
        native.StudyInstanceUID, native.SeriesInstanceUID, native.SOPInstanceUID, frame_numbers=[1]
    )
    assert frames[0] == native.PixelData
    for ds in study:
        jpeg = client.retrieve_instance_rendered(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=("image/jpeg",)
        )
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG" and image.size == (ds.Columns, ds.Rows)
        centre = image.convert("RGB").getpixel((ds.Columns // 2, ds.Rows // 2))
        assert centre[0] < 140  # the dark lesion is in the middle whatever the encoding
    url = (f"{server.root}/dicomweb/default/studies/{native.StudyInstanceUID}/series/{native.SeriesInstanceUID}"
           f"/instances/{native.SOPInstanceUID}")  # fmt: skip
    png = server.http.get(f"{url}/thumbnail", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert server.http.get(f"{url}/rendered", headers={"Accept": "application/pdf"}).status_code == 406
    assert server.http.get(f"{url}/frames/9").status_code == 404
    assert server.http.get(f"{url}/rendered", params={"frame": "x"}).status_code == 400
    fitted = server.http.get(f"{url}/rendered", params={"viewport": "16,8"}, headers={"Accept": "image/png"})
    assert fitted.status_code == 200 and max(Image.open(io.BytesIO(fitted.content)).size) <= 16  # PS3.18 8.3.5.1.3
    assert Image.open(io.BytesIO(fitted.content)).size[1] <= 8
    for bad in ("16", "0,8", "16,x", "99999999,8"):
        assert server.http.get(f"{url}/rendered", params={"viewport": bad}).status_code == 400


def test_not_found(client: DICOMwebClient, server: Server) -> None:
    with pytest.raises(HTTPError):
        client.retrieve_study("1.2.3.4.5")
    assert server.http.get(f"{server.root}/dicomweb/nowhere/studies").status_code == 404
    assert server.http.get(f"{server.root}/dicomweb/default/studies", params={"NotAnAttribute": "x"}).status_code == 400


def test_undecodable_pixels_are_a_client_error(server: Server) -> None:
    broken = dermoscopic(syntax=pydicom.uid.JPEGBaseline8Bit)
    broken.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    buffer = io.BytesIO()
    broken.save_as(buffer, enforce_file_format=True)
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n--b--\r\n"
    media = 'multipart/related; type="application/dicom"; boundary=b'
    stored = server.http.post(f"{server.root}/dicomweb/default/studies", content=body, headers={"Content-Type": media})
    assert stored.status_code == 200  # stored as received: the node does not decode on ingest
    url = (f"{server.root}/dicomweb/default/studies/{broken.StudyInstanceUID}/series/{broken.SeriesInstanceUID}"
           f"/instances/{broken.SOPInstanceUID}/rendered")  # fmt: skip
    assert server.http.get(url).status_code == 400


def test_oversized_stow_is_413(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicom_node.web import routes

    monkeypatch.setattr(routes, "MAX_STOW_BYTES", 1000)
    media = 'multipart/related; type="application/dicom"; boundary=b'
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * 5000 + b"\r\n--b--\r\n"
    with make_client(tmp_path / "var") as client:
        response = client.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media})
        assert response.status_code == 413


def test_qido_matches_the_keys_of_the_levels_above(client: DICOMwebClient, study: list[pydicom.Dataset]) -> None:
    """``/instances?PatientID=`` and ``/series?PatientName=`` (PS3.18 10.6.1.2) answer that patient's objects
    only: a key of a level above is matched through its studies and series, never ignored."""
    other = dermoscopic(patient_id="WEB2", patient_name="OTHER^OTTO", seed=99)
    client.store_instances([other])
    mine = {ds.SOPInstanceUID for ds in study}
    found = client.search_for_instances(search_filters={"PatientID": "WEB1"})
    assert {i["00080018"]["Value"][0] for i in found} == mine
    theirs = client.search_for_instances(search_filters={"PatientID": "WEB2"})
    assert [i["00080018"]["Value"][0] for i in theirs] == [other.SOPInstanceUID]
    series = client.search_for_series(search_filters={"PatientName": "weber*"})
    assert [s["0020000E"]["Value"][0] for s in series] == [study[0].SeriesInstanceUID]
    assert client.search_for_instances(search_filters={"PatientID": "NOBODY"}) == []
    by_modality = client.search_for_instances(search_filters={"PatientID": "WEB2", "Modality": other.Modality})
    assert len(by_modality) == 1
