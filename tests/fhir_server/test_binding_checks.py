"""Write-time binding checks over HTTP (terminologies.html#strength): a code outside a required binding of
R4 is refused with 422 and the element's path, on create, update, patch and in a transaction; outside an
extensible or preferred one it is a warning in the response's OperationOutcome (``Prefer:
return=OperationOutcome``, a transaction entry's ``response.outcome``); what the terminology held here cannot
decide (SNOMED CT beyond the shipped fragment) is never refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from fhir_server import binding_checks
from fhir_server.repository import Repository, new_instant
from fhir_server.storage.port import HistoryPage, HistoryQuery, ResourceVersion, TenantStore
from fhir_server.storage.sqlite import SqliteEngine
from tests.conftest import BASE, FhirTestClient
from tests.factories import transaction

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SNOMED = "http://snomed.info/sct"
OUTCOME = {"Prefer": "return=OperationOutcome"}


def condition(status: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "code": {"coding": [{"system": SNOMED, "code": "93655004", "display": "Malignant melanoma of skin"}]},
        "subject": {"display": "a patient"},
    }


def observation(interpretation: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "risk"},
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": interpretation}]}],
    }


def issues(body: dict[str, Any], severity: str) -> list[dict[str, Any]]:
    return [i for i in body["issue"] if i["severity"] == severity]


def test_a_code_outside_a_required_binding_is_refused_with_the_element_path(client: FhirTestClient) -> None:
    refused = client.post(f"{BASE}/Condition", json=condition("cured"))
    assert refused.status_code == 422
    [issue] = refused.json()["issue"]
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == ["Condition.clinicalStatus"]
    assert "condition-clinical" in issue["diagnostics"]
    created = client.post(f"{BASE}/Condition", json=condition("active"))
    assert created.status_code == 201
    id = created.json()["id"]
    refused = client.put(f"{BASE}/Condition/{id}", json={**condition("cured"), "id": id})
    assert refused.status_code == 422
    patch = [{"op": "replace", "path": "/clinicalStatus/coding/0/code", "value": "cured"}]
    refused = client.patch(
        f"{BASE}/Condition/{id}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Condition.clinicalStatus"]
    assert client.get(f"{BASE}/Condition/{id}").json()["meta"]["versionId"] == "1"


def test_a_text_only_concept_under_a_required_binding_is_refused(client: FhirTestClient) -> None:
    body = {**condition("active"), "clinicalStatus": {"text": "better"}}
    refused = client.post(f"{BASE}/Condition", json=body)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Condition.clinicalStatus"]


def test_an_extensible_binding_warns_and_never_refuses(client: FhirTestClient) -> None:
    created = client.post(f"{BASE}/Observation", json=observation("XYZ"), headers=OUTCOME)
    assert created.status_code == 201
    [warning] = issues(created.json(), "warning")
    assert warning["expression"] == ["Observation.interpretation[0]"]
    assert "extensible binding" in warning["diagnostics"]
    clean = client.post(f"{BASE}/Observation", json=observation("H"), headers=OUTCOME)
    assert issues(clean.json(), "warning") == []


def test_a_code_the_server_cannot_decide_is_information_only(client: FhirTestClient) -> None:
    """encounter-reason is SNOMED CT is-a 404684003; the shipped SNOMED CT is a fragment: not decided."""
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "reasonCode": [{"coding": [{"system": SNOMED, "code": "93655004"}]}],
    }
    created = client.post(f"{BASE}/Encounter", json=encounter, headers=OUTCOME)
    assert created.status_code == 201
    assert issues(created.json(), "warning") == []
    assert any(i.get("expression") == ["Encounter.reasonCode[0]"] for i in issues(created.json(), "information"))


def test_a_transaction_refuses_an_invalid_entry_and_reports_warnings_per_entry(client: FhirTestClient) -> None:
    def post(resource: dict[str, Any]) -> dict[str, Any]:
        return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}

    refused = client.post(BASE, json=transaction([post(observation("H")), post(condition("cured"))]))
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Condition.clinicalStatus"]
    assert client.get(f"{BASE}/Observation").json()["total"] == 0
    done = client.post(BASE, json=transaction([post(observation("XYZ")), post(condition("active"))]))
    assert done.status_code == 200
    first, second = done.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert first["response"]["outcome"]["issue"][0]["expression"] == ["Observation.interpretation[0]"]
    assert "outcome" not in second["response"]


class CountingStore:
    """A real tenant store whose history queries (the terminology stamp's two counts) are counted."""

    def __init__(self, store: TenantStore) -> None:
        self._store = store
        self.histories = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        self.histories += 1
        return await self._store.history(query)


CODE_SYSTEM = {"resourceType": "CodeSystem", "url": "urn:test:stamp", "status": "active", "content": "complete",
               "concept": [{"code": "a"}]}  # fmt: skip


@pytest.fixture
async def counting_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CountingStore]:
    monkeypatch.setattr(binding_checks, "_written", {})  # no other test's terminology writes
    monkeypatch.setattr(binding_checks, "STAMP_SECONDS", 3600.0)  # trusted throughout, unless a test says not
    engine = SqliteEngine(tmp_path)
    await engine.open()
    await engine.create_tenant("stamp")
    yield CountingStore(await engine.tenant("stamp"))
    await engine.close()


@pytest.mark.anyio
async def test_the_terminology_stamp_is_not_read_on_every_write(counting_store: CountingStore) -> None:
    """Profiled: the stamp's two counts were a fifth of an update's storage calls; read once, then trusted."""
    store = cast(TenantStore, counting_store)
    base = await binding_checks.membership_for(store)
    for _ in range(3):
        assert await binding_checks.membership_for(store) is base
    assert counting_store.histories == 2


@pytest.mark.anyio
async def test_a_terminology_write_of_this_process_is_seen_by_the_next_check(counting_store: CountingStore) -> None:
    store = cast(TenantStore, counting_store)
    base = await binding_checks.membership_for(store)
    await Repository.system(store, reason="test").create(dict(CODE_SYSTEM), resource_type="CodeSystem")
    assert await binding_checks.membership_for(store) is not base
    assert counting_store.histories == 4  # read again at once (the create's own check trusted it)


@pytest.mark.anyio
async def test_a_terminology_write_of_another_process_is_seen_once_the_stamp_is_read_again(
    counting_store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written without this process's repository (as another process would): seen when the stamp expires."""
    store = cast(TenantStore, counting_store)
    base = await binding_checks.membership_for(store)
    content = orjson.dumps({**CODE_SYSTEM, "id": "cs1", "meta": {"versionId": "1", "lastUpdated": new_instant()}})
    async with store.transaction() as tx:
        await tx.write(ResourceVersion("CodeSystem", "cs1", 1, new_instant(), content), None)
    assert await binding_checks.membership_for(store) is base  # the stamp is trusted for STAMP_SECONDS
    later = time.monotonic() + binding_checks.STAMP_SECONDS
    monkeypatch.setattr(binding_checks, "_clock", lambda: later)
    assert await binding_checks.membership_for(store) is not base
