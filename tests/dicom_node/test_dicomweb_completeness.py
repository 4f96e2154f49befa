"""DICOMweb beyond STOW/QIDO/WADO-RS, against a real server: HEAD, CORS for listed origins only,
series-level rendered, WADO-URI (PS3.18 chapter 9), an honest 406 for application/dicom+xml, and
DELETE of studies, series and instances (index, files and FHIR together; audited; scoped)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from tests.dicom_factories import dermoscopic
from tests.fhir_server.security.smart import IdentityProvider
from tests.server import Server, running_server

pytestmark = pytest.mark.interop
VIEWER = "https://viewer.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("dicomweb-complete")
    idp = IdentityProvider(directory)
    env = {"DERMBRIDGE_CORS_ORIGINS": VIEWER, "DERMBRIDGE_OIDC_ISSUER": "https://idp.example",
           "DERMBRIDGE_OIDC_JWKS": str(idp.jwks), "DERMBRIDGE_OIDC_AUDIENCE": "dermbridge"}  # fmt: skip
    with running_server(directory / "var", env=env) as running:
        running.idp = idp  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> DICOMwebClient:
    return DICOMwebClient(f"{server.root}/dicomweb/default", headers=server.headers)


def a_study(
    client: DICOMwebClient, series: int = 1, per_series: int = 2, patient: str = "WEB-C"
) -> list[pydicom.Dataset]:
    study_uid = pydicom.uid.generate_uid()
    datasets = []
    for s in range(series):
        series_uid = pydicom.uid.generate_uid()
        datasets += [dermoscopic(study_uid=study_uid, series_uid=series_uid, seed=s * 10 + n, patient_id=patient)
                     for n in range(per_series)]  # fmt: skip
    assert "FailedSOPSequence" not in client.store_instances(datasets)
    return datasets


def web(server: Server, path: str = "") -> str:
    return f"{server.root}/dicomweb/default{path}"


def test_head_answers_like_get_without_a_body(server: Server, client: DICOMwebClient) -> None:
    ds = a_study(client)[0]
    for path in ("/studies", f"/studies/{ds.StudyInstanceUID}/metadata", f"/studies/{ds.StudyInstanceUID}"):
        got = server.http.get(web(server, path))
        head = server.http.head(web(server, path))
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-type"] == got.headers["content-type"].replace(
            got.headers["content-type"], head.headers["content-type"]
        )
        assert head.headers["content-length"] == str(len(got.content))
    assert server.http.head(web(server, "/studies/1.2.3.999/metadata")).status_code == 404
    assert httpx2.head(web(server, "/studies")).status_code == 401


def test_cors_preflight_is_answered_only_for_a_listed_origin(server: Server) -> None:
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    listed = httpx2.options(web(server, "/studies"), headers={"Origin": VIEWER, **ask})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == VIEWER
    assert "authorization" in listed.headers["access-control-allow-headers"].lower()
    other = httpx2.options(web(server, "/studies"), headers={"Origin": "https://evil.example", **ask})
    assert "access-control-allow-origin" not in other.headers
    simple = server.http.get(web(server, "/studies"), headers={"Origin": VIEWER})
    assert simple.headers["access-control-allow-origin"] == VIEWER


def test_no_cors_by_default(tmp_path: Path) -> None:
    with running_server(tmp_path / "var", admin=False) as plain:
        ask = {"Origin": VIEWER, "Access-Control-Request-Method": "GET"}
        preflight = httpx2.options(web(plain, "/studies"), headers=ask)
        assert preflight.status_code in (401, 405) and "access-control-allow-origin" not in preflight.headers


def test_series_rendered_is_one_image_per_instance(server: Server, client: DICOMwebClient) -> None:
    datasets = a_study(client, per_series=3)
    ds = datasets[0]
    url = web(server, f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/rendered")
    answer = server.http.get(url, headers={"Accept": "image/png"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("multipart/related")
    assert 'type="image/png"' in answer.headers["content-type"]
    boundary = answer.headers["content-type"].split("boundary=")[1]
    images = [p for p in answer.content.split(b"--" + boundary.encode()) if b"\x89PNG" in p]
    assert len(images) == 3
    png = images[0][images[0].index(b"\x89PNG") :].rstrip(b"\r\n")
    assert Image.open(io.BytesIO(png)).size == (ds.Columns, ds.Rows)
    assert server.http.get(url, headers={"Accept": "application/pdf"}).status_code == 406


def test_wado_uri_returns_the_object_or_a_rendering(server: Server, client: DICOMwebClient) -> None:
    ds = a_study(client)[0]
    uids = {"requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID}  # fmt: skip
    jpeg = server.http.get(web(server, "/wado"), params=uids)
    assert (jpeg.status_code, jpeg.headers["content-type"]) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    dicom = server.http.get(web(server, "/wado"), params={**uids, "contentType": "application/dicom"})
    assert dicom.headers["content-type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(dicom.content)).SOPInstanceUID == ds.SOPInstanceUID
    other_syntax = {**uids, "contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.50"}
    assert server.http.get(web(server, "/wado"), params=other_syntax).status_code == 406
    assert server.http.get(web(server, "/wado"), params={**uids, "requestType": "X"}).status_code == 400
    assert server.http.get(web(server, "/wado"), params={**uids, "objectUID": "1.2.3.999"}).status_code == 404
    assert httpx2.get(web(server, "/wado"), params=uids).status_code == 401


def test_qido_refuses_dicom_xml_honestly(server: Server) -> None:
    xml = server.http.get(web(server, "/studies"), headers={"Accept": "application/dicom+xml"})
    assert xml.status_code == 406 and "dicom+json" in xml.json()["message"]
    either = server.http.get(
        web(server, "/studies"), headers={"Accept": "application/dicom+xml, application/dicom+json"}
    )
    assert either.status_code in (200, 204)


def fhir_count(server: Server, resource: str, uid: str) -> int:
    found = server.http.get(f"{server.base}/{resource}", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"})
    return int(found.json()["total"])


def stored_files(server: Server, study: str) -> set[str]:
    """The object files of ``study`` on disk (the blob tree: <data>/blobs/<tenant>/<study>/<series>/<sop>.dcm)."""
    assert server.log is not None
    root = server.log.parent / "var" / "blobs" / "default" / study
    return {path.stem for path in root.rglob("*.dcm")}


def test_delete_instance_series_and_study(server: Server, client: DICOMwebClient) -> None:
    datasets = a_study(client, series=2, per_series=2)
    first, second, third = datasets[0], datasets[1], datasets[2]
    study = first.StudyInstanceUID
    assert stored_files(server, study) == {ds.SOPInstanceUID for ds in datasets}
    instance = f"/studies/{study}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    assert server.http.delete(web(server, instance)).status_code == 204
    assert server.http.get(web(server, f"{instance}/metadata")).status_code == 404
    assert first.SOPInstanceUID not in stored_files(server, study) and len(stored_files(server, study)) == 3
    assert (
        fhir_count(server, "Media", first.SOPInstanceUID) == 0
        and fhir_count(server, "Media", second.SOPInstanceUID) == 1
    )
    imaging = server.http.get(f"{server.base}/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study}"})
    assert imaging.json()["entry"][0]["resource"]["numberOfInstances"] == 3
    found = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert found[0]["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    assert server.http.delete(web(server, f"/studies/{study}/series/{first.SeriesInstanceUID}")).status_code == 204
    assert (
        client.search_for_series(study_instance_uid=study) != []
        and fhir_count(server, "Media", second.SOPInstanceUID) == 0
    )
    assert server.http.delete(web(server, f"/studies/{study}")).status_code == 204
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert fhir_count(server, "ImagingStudy", study) == 0 and fhir_count(server, "Media", third.SOPInstanceUID) == 0
    assert stored_files(server, study) == set()
    assert server.http.delete(web(server, f"/studies/{study}")).status_code == 404
    events = server.http.get(f"{server.base}/AuditEvent", params={"type": "110105", "_count": "20"}).json()
    assert len(events.get("entry", [])) >= 3


def test_delete_needs_imaging_study_delete_under_user_or_system(server: Server, client: DICOMwebClient) -> None:
    ds = a_study(client, patient="WEB-D")[0]
    idp: IdentityProvider = server.idp  # type: ignore[attr-defined]
    url = web(server, f"/studies/{ds.StudyInstanceUID}")
    reader = idp.headers("system/ImagingStudy.rs system/Patient.rs")
    assert httpx2.delete(url, headers=reader).status_code == 403
    found = server.http.get(f"{server.base}/Patient", params={"identifier": "urn:clinic:mrn|WEB-D"})
    patient = found.json()["entry"][0]["resource"]["id"]
    assert (
        httpx2.delete(url, headers=idp.headers("patient/ImagingStudy.cruds patient/Patient.rs", patient)).status_code
        == 403
    )
    study_only = httpx2.delete(url, headers=idp.headers("system/ImagingStudy.d"))  # a PACS key for studies alone
    assert study_only.status_code == 403
    assert "Media" in study_only.json()["issue"][0]["diagnostics"]  # the deletion would remove the images' Media
    assert server.http.get(f"{url}/metadata").status_code == 200
    rights = "system/ImagingStudy.d system/Media.d system/DiagnosticReport.u system/Observation.u"
    assert httpx2.delete(url, headers=idp.headers(rights)).status_code == 204
    assert server.http.get(f"{url}/metadata").status_code == 404


def _case(server: Server, study: str) -> dict[str, Any]:
    found = server.http.get(f"{server.base}/DiagnosticReport", params={"identifier": f"urn:dicom:uid|urn:oid:{study}"})
    [entry] = found.json()["entry"]
    return dict(entry["resource"])


def _literal_references(resource: dict[str, Any]) -> list[str]:
    return [str(r["reference"]) for r in [*resource.get("imagingStudy", []), *(m["link"] for m in resource["media"])]
            if "reference" in r]  # fmt: skip


def test_delete_marks_the_cases_references_instead_of_leaving_them_dangling(
    server: Server, client: DICOMwebClient
) -> None:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    first, second = [dermoscopic(study_uid=study, series_uid=series, seed=n, patient_id="WEB-DANGLE",
                                 accession="ACC-DANGLE") for n in range(2)]  # fmt: skip
    assert "FailedSOPSequence" not in client.store_instances([first, second])
    before = _case(server, study)
    assert len(before["media"]) == 2 and len(before["imagingStudy"]) == 1
    instance = f"/studies/{study}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    assert server.http.delete(web(server, instance)).status_code == 204
    after = _case(server, study)
    markers = [m["link"] for m in after["media"] if "reference" not in m["link"]]
    identifier = {"system": "urn:dicom:uid", "value": f"urn:oid:{first.SOPInstanceUID}"}
    assert [(m["type"], m["identifier"]) for m in markers] == [("Media", identifier)]
    assert "deleted" in markers[0]["display"]
    assert server.http.delete(web(server, f"/studies/{study}")).status_code == 204
    gone = _case(server, study)
    assert _literal_references(gone) == []  # every image and the study: marked, none dangling
    assert gone["imagingStudy"][0]["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}
    for reference in _literal_references(before):
        assert server.http.get(f"{server.base}/{reference}").status_code == 410  # they were dangling before the fix
    events = server.http.get(f"{server.base}/AuditEvent", params={"type": "110105", "_count": "50"}).json()["entry"]
    named = {e["what"].get("reference", "").split("/_history")[0] for ev in events for e in ev["resource"]["entity"]}
    assert f"DiagnosticReport/{gone['id']}" in named


def _created(server: Server, resource: dict[str, Any]) -> str:
    response = server.http.post(f"{server.base}/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return f"{resource['resourceType']}/{response.json()['id']}"


def test_delete_takes_the_derived_images_and_withdraws_ai_results_left_without_a_source(
    server: Server, client: DICOMwebClient
) -> None:
    """Derm review 4, H3: an image filed to the wrong patient leaves no saliency copy and no current AI result."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    first, second = [dermoscopic(study_uid=study, series_uid=series, seed=n, patient_id="WEB-H3",
                                 accession="ACC-H3") for n in range(2)]  # fmt: skip
    assert "FailedSOPSequence" not in client.store_instances([first, second])
    media = {}
    for ds in (first, second):
        found = server.http.get(
            f"{server.base}/Media", params={"identifier": f"urn:dicom:uid|urn:oid:{ds.SOPInstanceUID}"}
        )
        media[ds.SOPInstanceUID] = found.json()["entry"][0]["resource"]
    image = media[first.SOPInstanceUID]
    subject = image["subject"]
    binary = _created(server, {"resourceType": "Binary", "contentType": "image/png", "data": "iVBORw0KGgo="})
    saliency = _created(server, {"resourceType": "Media", "status": "completed", "subject": subject,
                                 "partOf": [{"reference": f"Media/{image['id']}"}],
                                 "content": {"contentType": "image/png", "url": binary}})  # fmt: skip
    device = _created(server, {"resourceType": "Device", "status": "active"})

    def ai_result(*images: str) -> str:
        return _created(server, {"resourceType": "Observation", "status": "preliminary", "subject": subject,
                                 "code": {"text": "Probability of melanoma"}, "device": {"reference": device},
                                 "valueQuantity": {"value": 0.9},
                                 "derivedFrom": [{"reference": f"Media/{m}"} for m in images]})  # fmt: skip

    only_first = ai_result(image["id"])
    both = ai_result(image["id"], media[second.SOPInstanceUID]["id"])
    instance = f"/studies/{study}/series/{series}/instances/{first.SOPInstanceUID}"
    assert server.http.delete(web(server, instance)).status_code == 204
    assert server.http.get(f"{server.base}/{saliency}").status_code == 410  # the copy of the image went with it
    assert server.http.get(f"{server.base}/{binary}").status_code == 410
    withdrawn = server.http.get(f"{server.base}/{only_first}").json()
    assert withdrawn["status"] == "entered-in-error" and "no longer has a source" in withdrawn["note"][-1]["text"]
    assert server.http.get(f"{server.base}/{both}").json()["status"] == "preliminary"  # one source image is left
    events = server.http.get(f"{server.base}/AuditEvent", params={"type": "110105", "_count": "50"}).json()["entry"]
    named = {e["what"].get("reference", "").split("/_history")[0] for ev in events for e in ev["resource"]["entity"]}
    assert only_first in named
