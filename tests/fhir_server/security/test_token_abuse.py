"""The token endpoint under abuse: lockouts that cannot be turned against a client's owner, an audit
trail that a stranger cannot flood, no answer time that tells which client ids exist, and a 401
that tells where to sign in."""

from __future__ import annotations

import hashlib
import re
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from fhir_server.security import lockout
from fhir_server.security.endpoint import TokenRequest
from fhir_server.security.refusals import GROUPS_PER_TENANT
from fhir_server.storage.query import FieldMatch, RecordQuery
from tests.conftest import BASE, FhirTestClient, make_client
from tests.fhir_server.security.test_tokens import TOKEN_URL, assertion, backend_request, bearer, ec_key, new_client


@pytest.fixture
def anonymous(tmp_path: Path) -> Any:
    with make_client(tmp_path / "var", roles=()) as c:
        yield c


def secret_form(client_id: str, secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


def ask(c: FhirTestClient, form: dict[str, str], address: str) -> int:
    """A token request from ``address`` (the endpoint itself: TestClient has one address)."""
    endpoint = c.app.state.auth_http.endpoint  # type: ignore[attr-defined]
    request = TokenRequest(form, None, address, (TOKEN_URL,))
    try:
        c.portal.call(endpoint.handle, request)
    except Exception as error:  # OAuthError: its status is the answer
        return int(getattr(error, "status"))  # noqa: B009
    return 200


def test_wrong_secrets_from_one_address_do_not_lock_the_owner_out_elsewhere(anonymous: FhirTestClient) -> None:
    client, secret = new_client(anonymous)
    for _ in range(10):
        assert ask(anonymous, secret_form(client.client_id, "guess"), "203.0.113.66") == 401
    assert ask(anonymous, secret_form(client.client_id, secret), "203.0.113.66") == 429
    assert ask(anonymous, secret_form(client.client_id, secret), "198.51.100.7") == 200


def test_a_correct_client_assertion_is_never_locked_out(anonymous: FhirTestClient) -> None:
    private, jwks = ec_key()
    client, _ = new_client(anonymous, ("integration",), jwks=jwks)
    for _ in range(12):  # its secret guessed from the very address the client uses
        assert anonymous.post("/auth/token", data=secret_form(client.client_id, "guess")).status_code in (401, 429)
    assert anonymous.post("/auth/token", data=secret_form(client.client_id, "guess")).status_code == 429
    issued = backend_request(anonymous, assertion(client.client_id, private))
    assert issued.status_code == 200, issued.text


def refusal_events(c: FhirTestClient, admin: str) -> list[dict[str, Any]]:
    bundle = c.get(f"{BASE}/AuditEvent", params={"_count": "1000", "outcome": "4"}, headers=bearer(admin)).json()
    events = [e["resource"] for e in bundle.get("entry", [])]
    return [e for e in events if e["subtype"][0]["code"] == "110122"]


def refusals_counted(events: list[dict[str, Any]]) -> int:
    """Refused requests the events stand for: one each, or the count an aggregate records."""
    total = 0
    for event in events:
        details = [d for e in event.get("entity", []) for d in e.get("detail", []) if d["type"] == "refused-requests"]
        total += int(details[0]["valueString"]) if details else 1
    return total


def test_a_flood_of_refused_token_requests_is_audited_in_aggregate(anonymous: FhirTestClient) -> None:
    client, _ = new_client(anonymous)
    admin = anonymous.token()
    for _ in range(300):
        assert anonymous.post("/auth/token", data=secret_form(client.client_id, "guess")).status_code in (401, 429)
    assert len(refusal_events(anonymous, admin)) <= 2  # the first 401 and the first 429; the rest are counted
    anonymous.portal.call(anonymous.app.state.auth_http.record_summaries, True)  # type: ignore[attr-defined]
    events = refusal_events(anonymous, admin)
    assert refusals_counted(events) == 300
    summary = next(e for e in events if "more refused token requests" in e.get("outcomeDesc", ""))
    assert summary["period"]["start"] <= summary["period"]["end"]
    assert summary["agent"][0]["who"]["display"] == client.client_id


def test_a_spray_of_client_ids_is_audited_in_aggregate(anonymous: FhirTestClient) -> None:
    admin = anonymous.token()  # before the spray locks this address out
    for _ in range(120):
        form = secret_form(f"default.{secrets.token_hex(8)}", "guess")
        assert anonymous.post("/auth/token", data=form).status_code in (401, 429)
    assert len(refusal_events(anonymous, admin)) <= GROUPS_PER_TENANT + 2
    anonymous.portal.call(anonymous.app.state.auth_http.record_summaries, True)  # type: ignore[attr-defined]
    assert refusals_counted(refusal_events(anonymous, admin)) == 120


def test_unknown_and_known_client_ids_cost_the_same(anonymous: FhirTestClient, monkeypatch: Any) -> None:
    """Counted in key derivations (deterministic) and in this process's CPU time (not wall-clock time,
    which other processes on the machine disturb); a refusal of a known id once cost one scrypt and an
    unknown id none."""
    known, _ = new_client(anonymous)
    keys_only, _ = new_client(anonymous, ("integration",), secret=False, jwks=ec_key()[1])
    disabled, _ = new_client(anonymous)
    anonymous.portal.call(anonymous.app.state.clients.set_active, disabled.client_id, False)  # type: ignore[attr-defined]
    derivations: list[dict[str, Any]] = []
    real_scrypt = hashlib.scrypt

    def counted_scrypt(password: bytes, **kwargs: Any) -> bytes:
        derivations.append(kwargs)
        return real_scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counted_scrypt)
    cpu: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(4):  # fewer failures than lock anything out (on any version of the lockout)
        for kind, client_id in (("known", known.client_id), ("unknown", "default.0123456789abcdef")):
            before = time.process_time()
            assert anonymous.post("/auth/token", data=secret_form(client_id, "guess")).status_code == 401
            cpu[kind].append(time.process_time() - before)
    assert len(derivations) == 8
    for client_id in (keys_only.client_id, disabled.client_id, "nowhere.0123456789abcdef"):
        assert anonymous.post("/auth/token", data=secret_form(client_id, "guess")).status_code == 401
    assert len(derivations) == 11
    assert all(d == {"salt": d["salt"], "n": 2**14, "r": 8, "p": 1, "dklen": 32} for d in derivations)
    ratio = statistics.median(cpu["known"]) / statistics.median(cpu["unknown"])
    assert 1 / 3 < ratio < 3, cpu


def test_the_401_points_at_the_tenants_smart_configuration(anonymous: FhirTestClient) -> None:
    refused = anonymous.get(f"{BASE}/Patient")
    assert refused.status_code == 401
    diagnostics = refused.json()["issue"][0]["diagnostics"]
    found = re.search(r"(/\S*/\.well-known/smart-configuration)", diagnostics)
    assert found is not None, diagnostics
    assert anonymous.get(found.group(1)).status_code == 200


def strike_records(c: FhirTestClient) -> int:
    """The lockout's records in the default tenant (where the strikes are kept)."""
    query = RecordQuery(lockout.COLLECTION, (FieldMatch("idle", "range", ("", "9" * 12)),), limit=1000)

    async def count() -> int:
        store = await c.app.state.engine.tenant("default")  # type: ignore[attr-defined]
        return len(await store.find_records(query))

    return c.portal.call(count)


def test_failed_assertions_with_made_up_issuers_are_throttled_without_records(anonymous: FhirTestClient) -> None:
    """pentest-5 F12: a failed assertion was never throttled and wrote a pair record per unverified ``iss``."""
    private, _ = ec_key()
    answers = [backend_request(anonymous, assertion(f"made-up-{n}", private)).status_code for n in range(60)]
    assert answers[: lockout.ADDRESS_LIMIT] == [401] * lockout.ADDRESS_LIMIT
    assert set(answers[lockout.ADDRESS_LIMIT :]) == {429}
    assert strike_records(anonymous) == 1  # the address's; none per made-up client id
    private_ok, jwks = ec_key()
    client, _ = new_client(anonymous, ("integration",), jwks=jwks)
    issued = backend_request(anonymous, assertion(client.client_id, private_ok))
    assert issued.status_code == 200, issued.text  # a correct assertion is still never refused
