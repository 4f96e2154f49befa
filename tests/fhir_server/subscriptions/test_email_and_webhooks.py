"""Email Subscriptions delivered to a real SMTP server (aiosmtpd) and Slack-style JSON webhooks:
per-tenant templates, no personal data by default, suppression and preferences, every send audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fhir_server.notify.templates import Template
from tests.certificates import certificate
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation, patient
from tests.fhir_server.subscriptions.endpoints import hook_server, smtp_server, wait_for
from tests.server import cli

SENDER = "noreply@dermbridge.test"
# The hook servers listen on loopback: allow-listed as an operator would (DERMBRIDGE_SUBSCRIPTION_ALLOWED_HOSTS).
FAST: dict[str, Any] = {
    "subscription_retry_seconds": 0.05,
    "subscription_poll_seconds": 0.05,
    "subscription_max_attempts": 3,
    "subscription_allowed_hosts": ["127.0.0.1"],
}


def email_subscription(criteria: str, address: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "tell the GP",
        "criteria": criteria,
        "channel": {"type": "email", "endpoint": f"mailto:{address}"},
    }


def _config(tmp_path: Path, tenant: dict[str, Any]) -> Path:
    path = tmp_path / "notify.json"
    path.write_text(json.dumps({"default": tenant}))
    return path


def _subscribe(fhir: FhirTestClient, body: dict[str, Any]) -> None:
    response = fhir.post(f"{BASE}/Subscription", json=body)
    assert response.status_code == 201 and response.json()["status"] == "active", response.text


def test_email_carries_a_link_only_and_skips_suppressed_recipients(tmp_path: Path) -> None:
    with smtp_server() as (port, inbox):
        smtp = {"host": "127.0.0.1", "port": port, "tls": "none", "sender": SENDER}
        config = _config(
            tmp_path,
            {"smtp": smtp, "suppressed": ["Left@Example.org"], "preferences": {"quiet@example.org": {"email": False}}},
        )
        with make_client(tmp_path / "var", notify_config=config, **FAST) as fhir:
            for address in ("gp@example.org", "left@example.org", "quiet@example.org"):
                _subscribe(fhir, email_subscription("Observation?status=final", address))
            subject = fhir.post(f"{BASE}/Patient", json=patient("Zzyzx", "Quintessa")).json()["id"]
            made = fhir.post(f"{BASE}/Observation", json=observation(f"Patient/{subject}", value=131)).json()
            wait_for(lambda: _audited(fhir) == 3)
            assert [rcpt for rcpt, _ in inbox.messages] == [["gp@example.org"]]
            _, message = inbox.messages[0]
            assert message["From"] == "noreply@dermbridge.test" and message["Auto-Submitted"] == "auto-generated"
            body = message.get_content()
            assert f"/fhir/default/Observation/{made['id']}" in body
            for personal in ("Zzyzx", "Quintessa", "131", subject):
                assert personal not in body and personal not in str(message["Subject"])


def test_a_template_flagged_for_personal_data_may_carry_the_narrative(tmp_path: Path) -> None:
    with smtp_server() as (port, inbox):
        templates = {"email": {"subject": "Result $id", "body": "$summary\n$link", "personal_data": True}}
        smtp = {"host": "127.0.0.1", "port": port, "tls": "none", "sender": SENDER}
        config = _config(tmp_path, {"smtp": smtp, "templates": templates})
        with make_client(tmp_path / "var", notify_config=config, **FAST) as fhir:
            _subscribe(fhir, email_subscription("Observation", "gp@example.org"))
            text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Lesion 4 mm</div>'}
            fhir.post(f"{BASE}/Observation", json=observation("Patient/p1", text=text))
            wait_for(lambda: len(inbox.messages) == 1)
            assert "Lesion 4 mm" in inbox.messages[0][1].get_content()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_email_over_tls(tmp_path: Path, tls: str) -> None:
    cert, key = certificate(tmp_path)
    with smtp_server(tls, (cert, key)) as (port, inbox):
        smtp = {
            "host": "localhost",
            "port": port,
            "tls": tls,
            "sender": SENDER,
            "ca_file": str(cert),
        }
        with make_client(tmp_path / "var", notify_config=_config(tmp_path, {"smtp": smtp}), **FAST) as fhir:
            _subscribe(fhir, email_subscription("Observation", "gp@example.org"))
            fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
            wait_for(lambda: len(inbox.messages) == 1)
            assert inbox.messages[0][0] == ["gp@example.org"]


def test_personal_placeholders_need_the_flag() -> None:
    with pytest.raises(ValidationError, match="personal_data"):
        Template(body="$resource")
    assert Template(body="$resource", personal_data=True).personal_data


def test_email_without_smtp_settings_ends_in_error(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", **FAST) as fhir:
        created = fhir.post(f"{BASE}/Subscription", json=email_subscription("Observation", "gp@example.org")).json()
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: fhir.get(f"{BASE}/Subscription/{created['id']}").json()["status"] == "error")
        assert "no SMTP server" in fhir.get(f"{BASE}/Subscription/{created['id']}").json()["error"]


def test_slack_style_webhook_posts_the_rendered_template(tmp_path: Path) -> None:
    config = _config(tmp_path, {"templates": {"webhook": {"body": "New $resource_type: $link"}}})
    with hook_server() as hook, make_client(tmp_path / "var", notify_config=config, **FAST) as fhir:
        channel = {"type": "rest-hook", "endpoint": hook.url, "payload": "application/json"}
        fhir.post(f"{BASE}/Subscription", json={**email_subscription("Observation", "x@y.z"), "channel": channel})
        made = fhir.post(f"{BASE}/Observation", json=observation("Patient/p1")).json()
        wait_for(lambda: len(hook.received) == 1)
        (received,) = hook.received
        assert received.method == "POST" and received.headers["content-type"] == "application/json"
        assert json.loads(received.body) == {
            "text": f"New Observation: {fhir.app.state.settings.base_url()}"  # type: ignore[attr-defined]
            f"/fhir/default/Observation/{made['id']}"
        }


def _audited(fhir: FhirTestClient) -> int:
    found = fhir.get(f"{BASE}/AuditEvent", params={"subtype": "urn:dermbridge:audit|notification"}).json()
    return len(found.get("entry", []))


def test_settings_set_by_the_cli_apply_without_a_restart(tmp_path: Path) -> None:
    with smtp_server() as (port, inbox), make_client(tmp_path / "var", **FAST) as fhir:
        data_dir = ["--tenant", "default", "--data-dir", str(tmp_path / "var")]
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"templates": {"email": {"body": "$resource"}}}))
        refused = cli("notify", "set", str(bad), *data_dir)
        assert refused.returncode == 2 and "personal_data" in refused.stderr
        good = tmp_path / "good.json"
        good.write_text(json.dumps({"smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "sender": SENDER}}))
        done = cli("notify", "set", str(good), *data_dir)
        assert done.returncode == 0, done.stderr
        assert json.loads(cli("notify", "show", *data_dir).stdout)["smtp"]["port"] == port
        _subscribe(fhir, email_subscription("Observation", "gp@example.org"))
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: len(inbox.messages) == 1)
