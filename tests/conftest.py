from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from dermbridge.app import create_app
from dermbridge.settings import Settings
from tests.factories import put_entry, set_enforcement, synthea_resources, transaction
from tests.orthanc import Orthanc, running_orthanc
from tests.postgres import ThrowawayPostgres, throwaway_postgres
from tests.schema import assert_r4

BASE = "/fhir/default"


class FhirTestClient(TestClient):
    """A TestClient that checks every FHIR resource the server answers with against the R4 schema,
    and never accepts a 500. On entering it signs in as an admin client of the default tenant
    through the real token endpoint (``roles=()`` stays anonymous)."""

    roles: tuple[str, ...] = ("admin",)

    def __enter__(self) -> FhirTestClient:
        super().__enter__()
        if self.roles and self.app.state.settings.auth_enabled:  # type: ignore[attr-defined]
            self.headers["Authorization"] = f"Bearer {self.token(roles=self.roles)}"
        return self

    def token(self, tenant: str = "default", roles: tuple[str, ...] = ("admin",), scope: str | None = None) -> str:
        """A fresh client of ``tenant`` with ``roles``, and an access token it got from /auth/token."""
        client, secret = self.portal.call(self.app.state.clients.create, tenant, "test", roles)  # type: ignore[attr-defined]
        form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret}
        if scope:
            form["scope"] = scope
        response = super().request("POST", "/auth/token", data=form, headers={"Authorization": ""})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def request(self, *args: Any, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        response = super().request(*args, **kwargs)
        assert response.status_code < 500, response.text
        fhir_json = response.headers.get("content-type", "").startswith("application/fhir+json")
        if fhir_json and response.request.method != "HEAD":  # HEAD: the GET's headers, no body
            assert_r4(response.json())
        return response


def make_client(data_dir: Path, roles: tuple[str, ...] = ("admin",), **settings: Any) -> FhirTestClient:
    """An app on its own data directory; its DIMSE server (if enabled) listens on an ephemeral port."""
    settings.setdefault("dicom_port", 0)
    settings.setdefault("inference_enabled", False)  # tests/inference/ turn the worker on
    settings.setdefault("retention_every_hours", 0)  # tests/fhir_server/retention/ turn the schedule on
    settings.setdefault("review_sweep_seconds", 0)  # tests/fhir_server/workflow/test_review_sweep.py turns it on
    client = FhirTestClient(create_app(Settings(data_dir=data_dir, **settings)), raise_server_exceptions=True)
    client.roles = roles
    return client


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A throw-away PostgreSQL for the session (tests/postgres.py); each test takes a database of its own."""
    with throwaway_postgres() as server:
        yield server


ENGINES = ("sqlite", "postgresql")
# the engines and where the DICOM objects are: files (the default), or inside PostgreSQL (``blobs=postgresql``)
BLOB_STORES = (*ENGINES, "postgresql-blobs")


@pytest.fixture
def engine() -> dict[str, Any]:
    """The engine settings of a test's server: SQLite. A module whose tests run on every engine overrides this
    fixture with one parametrised by ``ENGINES`` that returns ``engine_settings(request)``."""
    return {}


@pytest.fixture
def client(tmp_path: Path, engine: dict[str, Any]) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", **engine) as c:
        yield c


def engine_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of the engine a fixture parametrised with ``ENGINES`` (or ``BLOB_STORES``) names: SQLite (the
    default), or a database of its own on the session's throw-away PostgreSQL (holding the DICOM objects too)."""
    if request.param == "sqlite":
        return {}
    database = request.getfixturevalue("postgres_server").create_database()
    in_database = {"blobs": "postgresql"} if request.param == "postgresql-blobs" else {}
    return {"storage": database, **in_database}


@pytest.fixture(scope="session", params=ENGINES)
def synthea_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FhirTestClient]:
    """A server loaded with the Synthea sample through transaction Bundles (read-only for tests), on each engine.
    Synthea claims US Core profiles, which the server does not hold: the tenant accepts unknown claims, as a
    hospital loading such data sets it (README, "Profiles and validation")."""
    with make_client(tmp_path_factory.mktemp("synthea") / "var", **engine_settings(request)) as c:
        set_enforcement(c, unknown="accept")
        batch: list[dict[str, Any]] = []
        for resource in synthea_resources():
            batch.append(put_entry(resource))
            if len(batch) == 400:
                assert c.post(BASE, json=transaction(batch)).status_code == 200
                batch = []
        if batch:
            assert c.post(BASE, json=transaction(batch)).status_code == 200
        yield c


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc on free loopback ports, as a peer PACS (``tests/orthanc.py``)."""
    with running_orthanc(tmp_path / "orthanc") as peer:
        yield peer
