"""The Python FHIR clients people use simply work (issue 19, "Clients that must simply work").

Each test drives a real client library against a real ``dermbridge serve`` on a loopback port:
fhirpy's ``patch()`` (a JSON merge patch) and ``count()`` (``_totalMethod``), fhirclient's default
scope request, HEAD, and the legacy ``application/json+fhir`` media type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhirclient import client as fhirclient
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirpy import SyncFHIRClient

from tests.factories import observation, patient
from tests.schema import assert_r4
from tests.server import Server, create_client, running_server

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients") / "var"


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[Server]:
    with running_server(data_dir, env={"DERMBRIDGE_DICOM_ENABLED": "false"}) as running:
        yield running


def fhirpy_client(server: Server, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(server.base, authorization=f"Bearer {server.token}", extra_headers=headers or None)


def test_fhirpy_patch(server: Server) -> None:
    """fhirpy 2.3 sends a resource fragment as application/json: it was refused as a bad JSON Patch."""
    client = fhirpy_client(server)
    created = client.resource("Patient", **patient(family="Patchy"))
    created.save()
    patched = client.patch("Patient", created["id"], gender="male", birthDate="1971-01-01")
    assert patched["gender"] == "male" and patched["birthDate"] == "1971-01-01"
    assert patched["name"][0]["family"] == "Patchy" and patched["meta"]["versionId"] == "2"
    created.patch(active=True)  # Resource.patch: the named fields only
    fetched = client.reference("Patient", created["id"]).to_resource()
    assert fetched["active"] is True and fetched["gender"] == "male" and fetched["meta"]["versionId"] == "3"
    assert_r4(fetched.serialize())


def test_fhirpy_count_with_lenient_handling(server: Server) -> None:
    """``count()`` adds ``_totalMethod=count``, unknown to FHIR: lenient handling ignores it."""
    client = fhirpy_client(server, Prefer="handling=lenient")
    client.resource("Patient", **patient(family="Counted")).save()
    client.resource("Patient", **patient(family="Counted")).save()
    assert client.resources("Patient").search(family="Counted").count() == 2


def test_fhirclient_default_scope_is_narrowed(server: Server, data_dir: Path) -> None:
    """fhirclient asks ``launch/patient user/*.* patient/*.read openid profile``: the clinician gets its part."""
    subject = server.http.post(f"{server.base}/Patient", json=patient(family="Scoped")).json()
    credentials = create_client(data_dir, "default", "clinician-reviewer")
    smart = fhirclient.FHIRClient(
        settings={
            "app_id": credentials["client_id"],
            "app_secret": credentials["client_secret"],
            "api_base": server.base + "/",
        }
    )
    smart.prepare()
    granted = smart.server.authorize()
    assert "user/*.rs" in granted["scope"].split() and "user/Observation.cruds" in granted["scope"].split()
    read = Patient.read(subject["id"], smart.server)
    assert read.name[0].family == "Scoped"
    finding = Observation(observation(f"Patient/{subject['id']}"))
    assert finding.create(smart.server)["resourceType"] == "Observation"


def test_head(server: Server) -> None:
    created = server.http.post(f"{server.base}/Patient", json=patient()).json()
    url = f"{server.base}/Patient/{created['id']}"
    head = server.http.head(url)
    get = server.http.get(url)
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == get.headers["etag"]
    assert server.http.head(f"{server.base}/Patient?_count=1").status_code == 200


def test_legacy_json_fhir_media_type(server: Server) -> None:
    legacy = "application/json+fhir"
    body = json.dumps(patient()).encode()
    headers = {"Content-Type": legacy, "Accept": legacy}
    created = server.http.post(f"{server.base}/Patient", content=body, headers=headers)
    assert created.status_code == 201, created.text
    client = fhirpy_client(server, Accept=legacy)
    assert client.reference("Patient", created.json()["id"]).to_resource()["id"] == created.json()["id"]
