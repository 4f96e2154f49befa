from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from dermbridge.app import create_app
from dermbridge.settings import Settings
from tests.factories import put_entry, synthea_resources, transaction
from tests.schema import assert_r4

BASE = "/fhir/default"


class FhirTestClient(TestClient):
    """A TestClient that checks every FHIR resource the server answers with against the R4 schema,
    and never accepts a 500."""

    def request(self, *args: Any, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        response = super().request(*args, **kwargs)
        assert response.status_code < 500, response.text
        if response.headers.get("content-type", "").startswith("application/fhir+json"):
            assert_r4(response.json())
        return response


def make_client(data_dir: Path, **settings: Any) -> FhirTestClient:
    """An app on its own data directory; its DIMSE server (if enabled) listens on an ephemeral port."""
    settings.setdefault("dicom_port", 0)
    return FhirTestClient(create_app(Settings(data_dir=data_dir, **settings)), raise_server_exceptions=True)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var") as c:
        yield c


@pytest.fixture(scope="session")
def synthea_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirTestClient]:
    """A server loaded with the Synthea sample through transaction Bundles (read-only for tests)."""
    with make_client(tmp_path_factory.mktemp("synthea") / "var") as c:
        batch: list[dict[str, Any]] = []
        for resource in synthea_resources():
            batch.append(put_entry(resource))
            if len(batch) == 400:
                assert c.post(BASE, json=transaction(batch)).status_code == 200
                batch = []
        if batch:
            assert c.post(BASE, json=transaction(batch)).status_code == 200
        yield c
