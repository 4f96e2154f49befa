"""DICOMweb under the AccessPolicy, driven by the dicomweb-client library against a real server: a
DICOM object carries its Patient module (PatientName, PatientBirthDate...), so reading one needs read
on ImagingStudy and on Patient, and a patient/ token sees only the studies of its own patient (another
patient's answer as absent: an empty search, 404 by UID); STOW needs a user/ or system/ create scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from requests.exceptions import HTTPError

from tests.dicom_factories import dermoscopic
from tests.fhir_server.security.smart import IdentityProvider
from tests.server import Server, running_server

pytestmark = pytest.mark.interop
READER = "patient/ImagingStudy.rs patient/Patient.rs"


@dataclass
class Studies:
    server: Server
    idp: IdentityProvider
    own: pydicom.Dataset  # an instance of alice's study
    other: pydicom.Dataset  # an instance of bob's study
    alice: str  # alice's Patient id, the launch patient of patient/ tokens

    def client(self, headers: dict[str, str]) -> DICOMwebClient:
        return DICOMwebClient(f"{self.server.root}/dicomweb/default", headers=headers)

    def patient_client(self, scope: str = READER) -> DICOMwebClient:
        return self.client(self.idp.headers(scope, self.alice))


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studies]:
    directory = tmp_path_factory.mktemp("dicomweb-access")
    idp = IdentityProvider(directory)
    env = {"DERMBRIDGE_OIDC_ISSUER": "https://idp.example", "DERMBRIDGE_OIDC_JWKS": str(idp.jwks),
           "DERMBRIDGE_OIDC_AUDIENCE": "dermbridge"}  # fmt: skip
    with running_server(directory / "var", env=env) as server:
        admin = DICOMwebClient(f"{server.root}/dicomweb/default", headers=server.headers)
        own = dermoscopic(patient_id="ACCESS-A", patient_name="OWN^ALICE")
        other = dermoscopic(patient_id="ACCESS-B", patient_name="OTHER^BOB")
        other.PatientBirthDate = "19551111"
        assert "FailedSOPSequence" not in admin.store_instances([own, other])
        found = server.http.get(f"{server.base}/Patient", params={"identifier": "urn:clinic:mrn|ACCESS-A"})
        alice = found.json()["entry"][0]["resource"]["id"]
        yield Studies(server, idp, own, other, alice)


def status_of(call: Callable[[], Any]) -> int:
    """The HTTP status a dicomweb-client call ended with (200 when it returned)."""
    try:
        call()
    except HTTPError as error:
        return int(error.response.status_code)
    return 200


def uids(found: list[dict[str, Any]], tag: str = "0020000D") -> set[str]:
    return {entry[tag]["Value"][0] for entry in found}


def retrievals(client: DICOMwebClient, ds: pydicom.Dataset, bulkdata: str) -> dict[str, Callable[[], Any]]:
    """Every WADO-RS retrieval of one instance (its study, series, metadata, frames, rendered, bulk data)."""
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    return {
        "study": lambda: client.retrieve_study(study),
        "series": lambda: client.retrieve_series(study, series),
        "instance": lambda: client.retrieve_instance(study, series, sop),
        "study-metadata": lambda: client.retrieve_study_metadata(study),
        "series-metadata": lambda: client.retrieve_series_metadata(study, series),
        "instance-metadata": lambda: client.retrieve_instance_metadata(study, series, sop),
        "frames": lambda: client.retrieve_instance_frames(study, series, sop, frame_numbers=[1]),
        "rendered": lambda: client.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",)),
        "bulkdata": lambda: client.retrieve_bulkdata(bulkdata),
    }


def bulkdata_uri(studies: Studies, ds: pydicom.Dataset) -> str:
    admin = studies.client(studies.server.headers)
    metadata = admin.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return str(metadata["7FE00010"]["BulkDataURI"])


def test_a_patient_token_searches_only_its_own_studies(studies: Studies) -> None:
    alice = studies.patient_client()
    own, other = studies.own, studies.other
    assert uids(alice.search_for_studies()) == {own.StudyInstanceUID}
    assert alice.search_for_studies(search_filters={"StudyInstanceUID": other.StudyInstanceUID}) == []
    assert alice.search_for_studies(search_filters={"PatientName": "other*"}) == []
    assert uids(alice.search_for_series()) == {own.StudyInstanceUID}
    assert alice.search_for_series(study_instance_uid=other.StudyInstanceUID) == []
    assert uids(alice.search_for_instances()) == {own.StudyInstanceUID}
    assert alice.search_for_instances(study_instance_uid=other.StudyInstanceUID) == []
    series = other.SeriesInstanceUID
    assert alice.search_for_instances(study_instance_uid=other.StudyInstanceUID, series_instance_uid=series) == []
    assert uids(alice.search_for_instances(study_instance_uid=own.StudyInstanceUID)) == {own.StudyInstanceUID}


def test_a_patient_token_retrieves_its_own_study_and_finds_no_other(studies: Studies) -> None:
    alice = studies.patient_client()
    own = retrievals(alice, studies.own, bulkdata_uri(studies, studies.own))
    assert {name: status_of(call) for name, call in own.items()} == dict.fromkeys(own, 200)
    other = retrievals(alice, studies.other, bulkdata_uri(studies, studies.other))
    assert {name: status_of(call) for name, call in other.items()} == dict.fromkeys(other, 404)


def test_imaging_scope_without_patient_read_reads_no_names_or_birth_dates(studies: Studies) -> None:
    for kind in ("system", "user"):
        imaging_only = studies.client(studies.idp.headers(f"{kind}/ImagingStudy.rs"))
        assert status_of(lambda c=imaging_only: c.search_for_studies(search_filters={"PatientName": "o*"})) == 403
        calls = retrievals(imaging_only, studies.other, bulkdata_uri(studies, studies.other))
        assert {name: status_of(call) for name, call in calls.items()} == dict.fromkeys(calls, 403)
    both = studies.client(studies.idp.headers("system/ImagingStudy.rs system/Patient.r"))
    found = both.search_for_studies(search_filters={"PatientID": "ACCESS-B"})
    assert [entry["00100030"]["Value"] for entry in found] == [["19551111"]]  # PatientBirthDate


def test_a_patient_scope_on_patient_narrows_a_system_imaging_scope(studies: Studies) -> None:
    mixed = studies.patient_client("system/ImagingStudy.rs patient/Patient.r")
    assert uids(mixed.search_for_studies()) == {studies.own.StudyInstanceUID}
    assert status_of(lambda: mixed.retrieve_study_metadata(studies.other.StudyInstanceUID)) == 404


def stow_status(client: DICOMwebClient, ds: pydicom.Dataset) -> int:
    return status_of(lambda: client.store_instances([ds]))


def test_a_patient_token_cannot_store(studies: Studies) -> None:
    admin = studies.client(studies.server.headers)
    into_bob = dermoscopic(patient_id="ACCESS-B", study_uid=studies.other.StudyInstanceUID)
    for ds in (into_bob, dermoscopic(patient_id="ACCESS-A")):  # another patient's record, and even its own
        assert stow_status(studies.patient_client("patient/ImagingStudy.crs patient/Patient.rs"), ds) == 403
        assert admin.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID}) == []
    device = studies.client(studies.idp.headers("system/ImagingStudy.c"))
    assert stow_status(device, dermoscopic(patient_id="ACCESS-C")) == 200
    reader = studies.client(studies.idp.headers("system/ImagingStudy.rs system/Patient.rs"))
    assert stow_status(reader, dermoscopic(patient_id="ACCESS-C")) == 403


def test_no_token_and_another_tenants_token_see_nothing(studies: Studies) -> None:
    nobody = studies.client({})
    assert status_of(nobody.search_for_studies) == 401
    assert status_of(lambda: nobody.retrieve_study_metadata(studies.own.StudyInstanceUID)) == 401
    assert stow_status(nobody, dermoscopic(patient_id="ACCESS-D")) == 401
    north = studies.client(studies.idp.headers("system/ImagingStudy.crs system/Patient.rs", tenant="north"))
    assert status_of(north.search_for_studies) == 404
    assert status_of(lambda: north.retrieve_study_metadata(studies.own.StudyInstanceUID)) == 404
    assert stow_status(north, dermoscopic(patient_id="ACCESS-D")) == 404


def test_another_patients_study_answers_as_one_that_does_not_exist(studies: Studies) -> None:
    """The same 404 as for an unknown UID (a FHIR read of another patient's resource answers so too)."""
    http = studies.server.http
    headers = studies.idp.headers(READER, studies.alice)
    ds = studies.other
    base = f"{studies.server.root}/dicomweb/default/studies"
    instance = f"{base}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    missing = http.get(f"{base}/1.2.3.999/metadata", headers=headers)
    assert missing.status_code == 404
    for url in (f"{base}/{ds.StudyInstanceUID}/metadata", f"{instance}/thumbnail"):
        other = http.get(url, headers={**headers, "Accept": "image/jpeg"} if "thumb" in url else headers)
        assert (other.status_code, other.json()) == (404, missing.json())
    own = studies.own
    thumbnail = f"{base}/{own.StudyInstanceUID}/series/{own.SeriesInstanceUID}/instances/{own.SOPInstanceUID}/thumbnail"
    assert http.get(thumbnail, headers={**headers, "Accept": "image/jpeg"}).status_code == 200


def test_a_merged_patients_studies_follow_it_to_the_target(studies: Studies) -> None:
    """The study's patient is its ImagingStudy's subject, which Patient/$merge re-points."""
    server, admin = studies.server, studies.client(studies.server.headers)
    source_image, target_image = dermoscopic(patient_id="ACCESS-M1"), dermoscopic(patient_id="ACCESS-M2")
    assert "FailedSOPSequence" not in admin.store_instances([source_image, target_image])
    ids = {}
    for mrn in ("ACCESS-M1", "ACCESS-M2"):
        found = server.http.get(f"{server.base}/Patient", params={"identifier": f"urn:clinic:mrn|{mrn}"})
        ids[mrn] = found.json()["entry"][0]["resource"]["id"]
    target = studies.client(studies.idp.headers(READER, ids["ACCESS-M2"]))
    assert uids(target.search_for_studies()) == {target_image.StudyInstanceUID}
    assert status_of(lambda: target.retrieve_study_metadata(source_image.StudyInstanceUID)) == 404
    parameters = [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{ids['ACCESS-M1']}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{ids['ACCESS-M2']}"}},
    ]
    merged = server.http.post(
        f"{server.base}/Patient/$merge", json={"resourceType": "Parameters", "parameter": parameters}
    )
    assert merged.status_code == 200, merged.text
    assert uids(target.search_for_studies()) == {source_image.StudyInstanceUID, target_image.StudyInstanceUID}
    both = {source_image.StudyInstanceUID, target_image.StudyInstanceUID}
    assert uids(target.search_for_series()) == uids(target.search_for_instances()) == both  # every level re-filed
    assert status_of(lambda: target.retrieve_study_metadata(source_image.StudyInstanceUID)) == 200


def patient_id_of(studies: Studies, mrn: str) -> str:
    found = studies.server.http.get(f"{studies.server.base}/Patient", params={"identifier": f"urn:clinic:mrn|{mrn}"})
    return str(found.json()["entry"][0]["resource"]["id"])


def test_a_client_written_imaging_study_grants_no_access_to_another_patients_images(studies: Studies) -> None:
    """pentest-2 finding 1: visibility comes from the Patient ingest filed a study under, never from an
    ImagingStudy identifier a client wrote; and such identifiers cannot claim another patient's images."""
    server, other = studies.server, studies.other
    fake = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": f"Patient/{studies.alice}"},
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{other.StudyInstanceUID}"}]}  # fmt: skip
    as_patient = server.http.post(f"{server.base}/ImagingStudy", json=fake,
                                  headers=studies.idp.headers("patient/*.cruds", studies.alice))  # fmt: skip
    assert (as_patient.status_code, as_patient.json()["resourceType"]) == (403, "OperationOutcome")
    system = studies.idp.headers("system/ImagingStudy.cruds")
    as_system = server.http.post(f"{server.base}/ImagingStudy", json=fake, headers=system)
    assert (as_system.status_code, as_system.json()["resourceType"]) == (409, "OperationOutcome")
    bobs = server.http.get(f"{server.base}/ImagingStudy",
                           params={"identifier": f"urn:dicom:uid|urn:oid:{other.StudyInstanceUID}"}).json()  # fmt: skip
    taken_over = {**bobs["entry"][0]["resource"], "subject": {"reference": f"Patient/{studies.alice}"}}
    moved = server.http.put(f"{server.base}/ImagingStudy/{taken_over['id']}", json=taken_over, headers=system)
    assert moved.status_code == 409
    alice = studies.patient_client("patient/*.cruds")
    calls = retrievals(alice, other, bulkdata_uri(studies, other))
    assert {name: status_of(call) for name, call in calls.items()} == dict.fromkeys(calls, 404)
    assert alice.search_for_studies(search_filters={"StudyInstanceUID": other.StudyInstanceUID}) == []
    assert alice.search_for_series(study_instance_uid=other.StudyInstanceUID) == []
    assert alice.search_for_instances(study_instance_uid=other.StudyInstanceUID) == []


def test_ingest_never_adopts_a_client_written_imaging_study_of_another_patient(studies: Studies) -> None:
    """A UID no image carries yet may be written; the images that later arrive with it for another patient
    get their own ImagingStudy, and the client's stays empty and grants nothing."""
    server, uid = studies.server, pydicom.uid.generate_uid()
    claim = {"resourceType": "ImagingStudy", "status": "registered",
             "subject": {"reference": f"Patient/{studies.alice}"},
             "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]}  # fmt: skip
    created = server.http.post(f"{server.base}/ImagingStudy", json=claim,
                               headers=studies.idp.headers("system/ImagingStudy.cruds"))  # fmt: skip
    assert created.status_code == 201, created.text
    device = studies.client(studies.idp.headers("system/ImagingStudy.c"))
    assert stow_status(device, dermoscopic(patient_id="ACCESS-B", study_uid=uid, seed=9)) == 200
    found = server.http.get(f"{server.base}/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"})
    subjects = {e["resource"]["subject"]["reference"]: e["resource"].get("numberOfInstances", 0)
                for e in found.json()["entry"]}  # fmt: skip
    assert subjects == {f"Patient/{studies.alice}": 0, f"Patient/{patient_id_of(studies, 'ACCESS-B')}": 1}
    assert studies.patient_client().search_for_studies(search_filters={"StudyInstanceUID": uid}) == []


def test_stow_of_an_image_naming_one_patient_into_anothers_study_is_refused(studies: Studies) -> None:
    """pentest-2 finding 2 (STOW-RS, PS3.18 10.5.3): the failed SOP says why (FailureReason A900, ErrorComment);
    the study keeps its patient's images only."""
    other = studies.other
    device = studies.client(studies.idp.headers("system/ImagingStudy.crs"))
    intruder = dermoscopic(patient_id="ACCESS-A", patient_name="OWN^ALICE", study_uid=other.StudyInstanceUID,
                           series_uid=other.SeriesInstanceUID, seed=7)  # fmt: skip
    with pytest.raises(HTTPError) as refused:
        device.store_instances([intruder])
    assert refused.value.response.status_code == 409
    failed = refused.value.response.json()["00081198"]["Value"]
    assert [(f["00081155"]["Value"], f["00081197"]["Value"], f["00000902"]["Value"]) for f in failed] == [
        ([intruder.SOPInstanceUID], [0xA900], ["StudyInstanceUID belongs to another patient"])
    ]
    bob = studies.client(studies.idp.headers(READER, patient_id_of(studies, "ACCESS-B")))
    metadata = bob.retrieve_study_metadata(other.StudyInstanceUID)
    assert [m["00100020"]["Value"] for m in metadata] == [["ACCESS-B"]]  # PatientID: bob's image only


QIDO_ROUTES = ("studies", "series", "instances", "studies/{study}/series", "studies/{study}/instances",
               "studies/{study}/series/{series}/instances")  # fmt: skip
BAD_NUMBERS = (str(2**63), str(2**64), "9" * 19, "9" * 5000, "-1", "abc", "1e3", "\u00b2", "")


@pytest.mark.parametrize("route", QIDO_ROUTES)
def test_qido_offset_and_limit_out_of_bounds_answer_400(studies: Studies, route: str) -> None:
    """pentest-2 finding 4: offset/limit at or beyond 2**63 (and negative, non-numeric) are 400 with a message,
    bounded like FHIR ``_offset`` (fhir_server.limits), not a 500; the server answers the next request."""
    own = studies.own
    path = route.format(study=own.StudyInstanceUID, series=own.SeriesInstanceUID)
    url = f"{studies.server.root}/dicomweb/default/{path}"
    headers = studies.server.headers
    for name in ("offset", "limit"):
        for value in BAD_NUMBERS:
            answer = studies.server.http.get(url, params={name: value}, headers=headers)
            assert answer.status_code == 400, (name, value[:20], answer.status_code)
            assert name in answer.json()["message"]
    assert (
        studies.server.http.get(url, params={"offset": "0", "limit": str(10**18 - 1)}, headers=headers).status_code
        == 200
    )
