"""One example per profile, built by the server's own builders (placeholder until the profiles land)."""

from __future__ import annotations

from typing import Any


def examples(profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return []
