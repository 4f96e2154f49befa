"""``dermbridge issuer`` and ``dermbridge consent-purposes``: a tenant's settings from the command line."""

from __future__ import annotations

from pathlib import Path

from tests.server import cli

TREAT = "http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT"
AI = "urn:dermbridge:purpose-of-use|ai-analysis"


def test_consent_purposes_are_listed_set_and_reset(tmp_path: Path) -> None:
    data = str(tmp_path / "var")
    assert cli("tenant", "create", "clinic-north", "--data-dir", data).returncode == 0
    listed = cli("consent-purposes", "list", "--tenant", "clinic-north", "--data-dir", data)
    assert listed.stdout.split() == [AI, TREAT]
    narrowed = cli("consent-purposes", "set", AI, "--tenant", "clinic-north", "--data-dir", data)
    assert narrowed.returncode == 0 and narrowed.stdout.split() == [AI]
    assert cli("consent-purposes", "list", "--tenant", "clinic-north", "--data-dir", data).stdout.split() == [AI]
    reset = cli("consent-purposes", "reset", "--tenant", "clinic-north", "--data-dir", data)
    assert reset.stdout.split() == [AI, TREAT]
    bad = cli("consent-purposes", "set", "TREAT", "--tenant", "clinic-north", "--data-dir", data)
    assert bad.returncode == 2 and "system|code" in bad.stderr
    unknown = cli("issuer", "list", "--tenant", "nowhere", "--data-dir", data)
    assert unknown.returncode == 2 and "no tenant" in unknown.stderr


def test_review_policy_is_shown_set_and_reset(tmp_path: Path) -> None:
    data = str(tmp_path / "var")
    assert cli("tenant", "create", "clinic-north", "--data-dir", data).returncode == 0
    shown = cli("review-policy", "show", "--tenant", "clinic-north", "--data-dir", data)
    assert "tier dermatologist" in shown.stdout and "asap 2 days" in shown.stdout
    policy = tmp_path / "policy.json"
    policy.write_text('{"tiers": {"gp": {"escalate_to": "dermatologist"}, "dermatologist": {}}, "lease_minutes": 20}')
    changed = cli("review-policy", "set", "--file", str(policy), "--tenant", "clinic-north", "--data-dir", data)
    assert changed.returncode == 0 and "tier gp" in changed.stdout and "lease: 20 minutes" in changed.stdout
    policy.write_text('{"max_declines": 0}')
    bad = cli("review-policy", "set", "--file", str(policy), "--tenant", "clinic-north", "--data-dir", data)
    assert bad.returncode == 2 and "max_declines" in bad.stderr
    assert "lease: 20 minutes" in cli("review-policy", "show", "--tenant", "clinic-north", "--data-dir", data).stdout
    reset = cli("review-policy", "reset", "--tenant", "clinic-north", "--data-dir", data)
    assert "lease: 30 minutes" in reset.stdout


def test_forwarding_is_shown_set_refused_and_reset(tmp_path: Path) -> None:
    data = str(tmp_path / "var")
    assert cli("tenant", "create", "clinic-north", "--data-dir", data).returncode == 0
    config = tmp_path / "forwarding.json"
    config.write_text('{"destinations": {"pacs": {"aeTitle": "PACS", "host": "10.0.0.5", "port": 104}},'
                      ' "rules": [{"destination": "pacs", "outcomes": ["malignant"]}]}')  # fmt: skip
    changed = cli("forwarding", "set", "--file", str(config), "--tenant", "clinic-north", "--data-dir", data)
    assert changed.returncode == 0, changed.stderr
    shown = cli("forwarding", "show", "--tenant", "clinic-north", "--data-dir", data).stdout
    assert "destination pacs: PACS@10.0.0.5:104" in shown and "outcome in ['malignant'] -> pacs" in shown
    config.write_text('{"destinations": {}, "rules": [{"destination": "pacs"}]}')
    bad = cli("forwarding", "set", "--file", str(config), "--tenant", "clinic-north", "--data-dir", data)
    assert bad.returncode == 2 and "rules[0].destination" in bad.stderr
    reset = cli("forwarding", "reset", "--tenant", "clinic-north", "--data-dir", data)
    assert reset.returncode == 0 and "destination" not in reset.stdout
