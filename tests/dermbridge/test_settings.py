"""List settings from the environment: a JSON list or comma-separated values, as operators write them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermbridge.settings import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1", ["127.0.0.1"]), ("hooks.internal, 10.1.0.0/16", ["hooks.internal", "10.1.0.0/16"]),
     ('["hooks.internal", "10.1.0.0/16"]', ["hooks.internal", "10.1.0.0/16"]), ("", [])],
)  # fmt: skip
def test_a_list_setting_takes_json_or_commas(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    monkeypatch.setenv("DERMBRIDGE_SUBSCRIPTION_ALLOWED_HOSTS", value)
    monkeypatch.setenv("DERMBRIDGE_FORWARDED_ALLOW_IPS", value)
    monkeypatch.setenv("DERMBRIDGE_INFERENCE_MODELS", value)
    settings = Settings(_env_file=None)
    assert settings.subscription_allowed_hosts == expected
    assert settings.forwarded_allow_ips == expected
    assert settings.inference_models == [Path(p) for p in expected]
