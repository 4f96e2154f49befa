"""GroupCommit (fhir_server/storage/postgres/group.py): one bad item fails alone; an outage fails the group once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from fhir_server.storage.postgres.group import GroupCommit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _three_at_once(error: Exception) -> tuple[list[list[int]], list[BaseException | None]]:
    """Items 1..3 in one group; ``write`` raises ``error`` for a group holding item 2."""
    writes: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> None:
        writes.append(items)
        if items == [0]:
            await release.wait()  # holds the writer, so 1..3 gather into the next group
        if 2 in items:
            raise error

    group: GroupCommit[int] = GroupCommit(write)
    first = asyncio.ensure_future(group.add(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.add(n)) for n in (1, 2, 3)]
    release.set()
    await first
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    return writes, [o if isinstance(o, BaseException) else None for o in outcomes]


async def test_a_refused_item_fails_alone() -> None:
    refused = asyncpg.NumericValueOutOfRangeError("value out of range")
    writes, outcomes = await _three_at_once(refused)
    assert writes == [[0], [1, 2, 3], [1], [2], [3]]
    assert outcomes == [None, refused, None]


@pytest.mark.parametrize(
    "outage",
    [TimeoutError(), ConnectionResetError(), asyncpg.AdminShutdownError("shutdown"),
     asyncpg.ConnectionFailureError("lost"), asyncpg.InterfaceError("connection is closed")],
)  # fmt: skip
async def test_an_outage_settles_the_whole_group_with_one_attempt(outage: Exception) -> None:
    writes, outcomes = await _three_at_once(outage)
    assert writes == [[0], [1, 2, 3]]
    assert outcomes == [outage, outage, outage]
