"""DICOMweb DELETE's FHIR side on a real SQLite tenant store (no HTTP): the images derived from deleted ones are
found with one search of the patient's Media, not one per deleted image (dicom review 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dermbridge.cli_support import opened_engine
from dermbridge.settings import Settings
from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from dicom_node.web.deletion import _forget_in_fhir
from fhir_server.repository import Repository, Stored
from fhir_server.storage.port import TenantStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TenantStore]:
    async with opened_engine(Settings(data_dir=tmp_path / "var")) as engine:
        await engine.create_tenant("alpha")
        yield await engine.tenant("alpha")


class CountingRepository(Repository):
    """The real repository, counting the searches of a patient's Media."""

    subject_searches = 0

    async def find(self, resource_type: str, criteria: list[tuple[str, str]], count: int = 1) -> list[Stored]:
        if resource_type == "Media" and any(name == "subject" for name, _ in criteria):
            type(self).subject_searches += 1
        return await super().find(resource_type, criteria, count)


async def _created(repo: Repository, resource: dict[str, Any]) -> str:
    stored = await repo.create(resource, resource_type=resource["resourceType"])
    return f"{resource['resourceType']}/{stored.resource['id']}"


async def test_the_derived_images_of_many_deleted_ones_are_found_in_one_search(store: TenantStore) -> None:
    repo = CountingRepository.system(store, reason="test")
    patient = await _created(repo, {"resourceType": "Patient", "name": [{"family": "Delete"}]})
    sops = [f"1.2.826.0.1.3680043.8.498.{n}" for n in range(5)]
    images = [await _created(repo, {"resourceType": "Media", "status": "completed", "subject": {"reference": patient},
                                    "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{sop}"}],
                                    "content": {"contentType": "application/dicom"}})
              for sop in sops]  # fmt: skip
    derived = [await _created(repo, {"resourceType": "Media", "status": "completed", "subject": {"reference": patient},
                                     "partOf": [{"reference": image}], "content": {"contentType": "image/png"}})
               for image in images[:2]]  # fmt: skip
    kept = await _created(repo, {"resourceType": "Media", "status": "completed", "subject": {"reference": patient},
                                 "content": {"contentType": "image/png"}})  # fmt: skip
    CountingRepository.subject_searches = 0
    await _forget_in_fhir(repo, None, set(sops))
    assert CountingRepository.subject_searches == 1  # it was one per deleted image: 5
    for gone in images + derived:
        assert await repo.current("Media", gone.split("/")[1]) is None
    assert await repo.current("Media", kept.split("/")[1]) is not None
