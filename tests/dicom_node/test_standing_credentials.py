"""Credentials for systems that cannot refresh OAuth tokens (a PACS, Orthanc's DICOMweb plugin), against
a real server: HTTP Basic with a client's id and secret once an operator allows it, and API keys with
their own scopes and patient; both decided by the same AccessPolicy as tokens, refused at once when
revoked, and bounded in failed attempts. Driven by httpx and by dicomweb-client over a requests
session with Basic auth, the way Orthanc or a gateway would connect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.dicom_factories import dermoscopic
from tests.dicom_node.test_dicomweb_access import status_of, uids
from tests.server import Server, cli, create_client, running_server

pytestmark = pytest.mark.interop


@dataclass
class Site:
    server: Server
    data_dir: Path
    device: dict[str, str]  # an integration client (id, secret), as a PACS link would use
    alice: str  # the Patient id of PatientID CRED-A
    own: pydicom.Dataset  # alice's image
    other: pydicom.Dataset  # bob's image

    def operator(self, *args: str) -> str:
        """``dermbridge client ...`` as an operator runs it; its standard output."""
        done = cli("client", *args, "--data-dir", str(self.data_dir))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def new_key(self, *args: str) -> dict[str, str]:
        created: dict[str, str] = json.loads(
            self.operator("key", "create", "--client-id", self.device["client_id"], *args)
        )
        return created

    def dicomweb(self, user: str, password: str) -> DICOMwebClient:
        session = requests.Session()
        session.auth = (user, password)
        return DICOMwebClient(f"{self.server.root}/dicomweb/default", session=session)

    def fhir(self, method: str, path: str, headers: dict[str, str], **kwargs: object) -> httpx2.Response:
        return httpx2.request(method, f"{self.server.base}/{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("standing") / "var"
    with running_server(data_dir) as server:
        device = create_client(data_dir, "default", "integration")
        admin = DICOMwebClient(f"{server.root}/dicomweb/default", headers=server.headers)
        own, other = dermoscopic(patient_id="CRED-A"), dermoscopic(patient_id="CRED-B", patient_name="OTHER^BOB")
        assert "FailedSOPSequence" not in admin.store_instances([own, other])
        found = server.http.get(f"{server.base}/Patient", params={"identifier": "urn:clinic:mrn|CRED-A"})
        alice = found.json()["entry"][0]["resource"]["id"]
        yield Site(server, data_dir, device, alice, own, other)


def test_basic_is_off_until_an_operator_allows_it_and_off_again_at_once(site: Site) -> None:
    user, secret = site.device["client_id"], site.device["client_secret"]
    pacs = site.dicomweb(user, secret)
    assert status_of(pacs.search_for_studies) == 401
    site.operator("allow-basic", "--client-id", user)
    assert uids(pacs.search_for_studies()) >= {site.own.StudyInstanceUID, site.other.StudyInstanceUID}
    fhir = site.fhir("GET", "Patient", {}, auth=(user, secret), params={"identifier": "urn:clinic:mrn|CRED-A"})
    assert (fhir.status_code, fhir.json()["total"]) == (200, 1)
    assert status_of(site.dicomweb(user, secret + "x").search_for_studies) == 401
    site.operator("deny-basic", "--client-id", user)
    assert status_of(pacs.search_for_studies) == 401
    assert site.fhir("GET", "Patient", {}, auth=(user, secret)).status_code == 401


def test_an_api_key_works_as_bearer_and_as_basic_until_revoked(site: Site) -> None:
    key = site.new_key("--name", "orthanc", "--scope", "system/ImagingStudy.rs system/Patient.rs")
    bearer = {"Authorization": f"Bearer {key['api_key']}"}
    found = httpx2.get(f"{site.server.root}/dicomweb/default/studies", headers=bearer, timeout=30)
    assert found.status_code == 200
    assert site.fhir("GET", "Patient", bearer).status_code == 200
    pacs = site.dicomweb(site.device["client_id"], key["api_key"])
    assert site.own.StudyInstanceUID in uids(pacs.search_for_studies())
    assert status_of(site.dicomweb("default.someoneelse", key["api_key"]).search_for_studies) == 401
    listed = site.operator("key", "list", "--client-id", site.device["client_id"])
    assert f"{key['key_id']}\torthanc" in listed and "active" in listed
    site.operator("key", "revoke", "--client-id", site.device["client_id"], "--key-id", key["key_id"])
    assert status_of(pacs.search_for_studies) == 401  # the very next request
    assert site.fhir("GET", "Patient", bearer).status_code == 401


def test_a_keys_scopes_limit_it(site: Site) -> None:
    key = site.new_key("--scope", "system/ImagingStudy.rs system/Patient.rs")
    reader = site.dicomweb(site.device["client_id"], key["api_key"])
    assert status_of(lambda: reader.store_instances([dermoscopic(patient_id="CRED-C")])) == 403
    bearer = {"Authorization": f"Bearer {key['api_key']}"}
    assert site.fhir("GET", "Observation", bearer).status_code == 403
    written = site.fhir("POST", "Patient", bearer, json={"resourceType": "Patient"})
    assert written.status_code == 403
    imaging = site.new_key("--scope", "system/ImagingStudy.rs")  # no Patient read: no names over DICOMweb
    assert status_of(site.dicomweb(site.device["client_id"], imaging["api_key"]).search_for_studies) == 403


def test_a_key_cannot_get_more_than_its_clients_roles(site: Site) -> None:
    reviewer = create_client(site.data_dir, "default", "auditor")
    done = cli("client", "key", "create", "--client-id", reviewer["client_id"], "--scope", "system/Patient.rs",
               "--data-dir", str(site.data_dir))  # fmt: skip
    assert done.returncode == 2 and "cannot create the key: none of the requested scopes" in done.stderr


def test_a_patient_key_sees_only_its_patient(site: Site) -> None:
    key = site.new_key("--scope", "patient/ImagingStudy.rs patient/Patient.rs", "--patient", site.alice)
    portal = site.dicomweb(site.device["client_id"], key["api_key"])
    assert uids(portal.search_for_studies()) == {site.own.StudyInstanceUID}
    assert status_of(lambda: portal.retrieve_study_metadata(site.other.StudyInstanceUID)) == 404
    bearer = {"Authorization": f"Bearer {key['api_key']}"}
    patients = site.fhir("GET", "Patient", bearer).json()
    assert [e["resource"]["id"] for e in patients["entry"]] == [site.alice]
    assert cli("client", "key", "create", "--client-id", site.device["client_id"], "--scope",
               "patient/Patient.rs", "--data-dir", str(site.data_dir)).returncode == 2  # fmt: skip


def test_repeated_wrong_secrets_are_locked_out_with_429(site: Site) -> None:
    user = site.device["client_id"]
    url = f"{site.server.root}/dicomweb/default/studies"
    statuses = [httpx2.get(url, auth=(user, f"wrong-{i}"), timeout=30).status_code for i in range(12)]
    assert statuses[0] == 401 and statuses[-1] == 429
    locked = httpx2.get(url, auth=(user, site.device["client_secret"]), timeout=30)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert locked.json()["resourceType"] == "OperationOutcome"
