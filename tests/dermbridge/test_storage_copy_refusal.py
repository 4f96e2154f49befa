"""A target a failed copy left half-filled is refused with how to clean it up (dermbridge/storage_copy.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dermbridge.storage_copy import CopyRefused, _check_empty
from fhir_server.storage.port import ResourceVersion
from fhir_server.storage.sqlite import SqliteEngine


def test_a_half_copied_target_is_refused_with_a_clean_up_hint(tmp_path: Path) -> None:
    async def refusal() -> str:
        engine = SqliteEngine(tmp_path)
        await engine.open()
        try:
            await engine.create_tenant("clinic")
            store = await engine.tenant("clinic")
            async with store.transaction() as tx:  # what a copy stopped part-way leaves
                await tx.write(ResourceVersion("Patient", "p1", 1, "2026-01-01T00:00:00.000+00:00", b"{}", "PUT"), None)
            with pytest.raises(CopyRefused) as refused:
                await _check_empty("clinic", store)
            return str(refused.value)
        finally:
            await engine.close()

    message = asyncio.run(refusal())
    assert "is not empty (1 resource versions" in message
    assert 'DROP SCHEMA "clinic" CASCADE' in message and "tenants/clinic.sqlite*" in message
