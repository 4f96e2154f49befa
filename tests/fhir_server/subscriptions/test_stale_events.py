"""A change event delivered after the resource changed again (the endpoint was down, or the worker behind):
search sees only the current version, so each event is matched only while its own version is current. The
later change's event notifies once, with that version; before, both events sent the newest version."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BASE, make_client
from tests.factories import observation, patient
from tests.fhir_server.subscriptions.endpoints import hook_server, wait_for
from tests.fhir_server.subscriptions.test_rest_hook import FAST, subscription
from tests.server import pending_events


def test_two_changes_before_a_delivery_send_the_newest_version_once(tmp_path: Path) -> None:
    with hook_server() as hook, make_client(tmp_path / "var", **{**FAST, "subscription_max_attempts": 50}) as fhir:
        created = fhir.post(f"{BASE}/Subscription", json=subscription("Observation?status=final", hook.url,
                                                                       "application/fhir+json"))  # fmt: skip
        assert created.status_code == 201, created.text
        subject = fhir.post(f"{BASE}/Patient", json=patient("Doe", "Jane")).json()["id"]
        hook.fail_next = 10**6  # the EHR is down while the result is written and then corrected
        first = fhir.post(f"{BASE}/Observation", json=observation(f"Patient/{subject}", value=120)).json()
        corrected = {**first, "valueQuantity": {**first["valueQuantity"], "value": 121}}
        assert fhir.put(f"{BASE}/Observation/{first['id']}", json=corrected).status_code == 200
        wait_for(lambda: hook.attempts >= 1)
        hook.fail_next = 0
        wait_for(lambda: pending_events(tmp_path / "var", ("subscriptions",)) == 0, timeout=60)
        assert [(r.method, r.path) for r in hook.received] == [("PUT", f"/hook/Observation/{first['id']}")]
        sent = json.loads(hook.received[0].body)
        assert sent["meta"]["versionId"] == "2" and sent["valueQuantity"]["value"] == 121
