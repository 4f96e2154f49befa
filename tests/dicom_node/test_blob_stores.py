"""The object stores behind ``dicom_node.blobs.BlobStore``: a file tree and PostgreSQL chunk rows keep the same
contract (stage, publish replacing, read, delete, a study's removal, listing, the sweep of what a crashed
store staged), on a real file system and a real PostgreSQL (``tests/postgres.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from dicom_node.blobs import BlobKey, BlobStore, FileBlobStore
from dicom_node.blobs_postgres import CHUNK, PostgresBlobStore
from fhir_server.storage.postgres import PostgresEngine
from tests.dicom_factories import dermoscopic
from tests.dicom_scu import c_store
from tests.postgres import ThrowawayPostgres
from tests.server import free_port, running_server

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=("files", "postgresql"))
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "files":
        yield FileBlobStore(tmp_path / "blobs")
        return
    dsn = request.getfixturevalue("postgres_server").create_database()
    engine = PostgresEngine(dsn)
    await engine.open()
    await engine.create_tenant("default")  # its schema holds the blob tables (migration step 2)
    store = PostgresBlobStore(dsn)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await engine.close()


def _key(instance: str) -> BlobKey:
    return BlobKey("default", STUDY, SERIES, instance)


async def _put(blobs: BlobStore, key: BlobKey, data: bytes) -> None:
    await blobs.publish(await blobs.stage(key.tenant, data), key)


@pytest.mark.anyio
async def test_objects_round_trip_in_chunks_and_publish_replaces(blobs: BlobStore) -> None:
    large = os.urandom(2 * CHUNK + 12345)  # three chunks in PostgreSQL; sealed objects look like this
    await _put(blobs, _key("1.2.3.1"), large)
    await _put(blobs, _key("1.2.3.2"), b"")  # an empty object is an object
    assert await blobs.read(_key("1.2.3.1")) == large
    assert await blobs.read(_key("1.2.3.2")) == b""
    await _put(blobs, _key("1.2.3.1"), b"replacement")  # a duplicate stored with duplicates=replace
    assert await blobs.read(_key("1.2.3.1")) == b"replacement"
    assert [k.instance async for k in blobs.keys("default")] == ["1.2.3.1", "1.2.3.2"]


@pytest.mark.anyio
async def test_staged_objects_are_no_one_s_until_published(blobs: BlobStore) -> None:
    staged = await blobs.stage("default", b"DBB1 half a store")
    assert not await blobs.exists(_key("1.2.3.1"))
    assert [k async for k in blobs.keys("default")] == []
    await blobs.discard(staged)
    with pytest.raises(FileNotFoundError):
        await blobs.read(_key("1.2.3.1"))


@pytest.mark.anyio
async def test_deleting_an_instance_and_erasing_a_study(blobs: BlobStore) -> None:
    for n in range(3):
        await _put(blobs, _key(f"1.2.3.{n}"), b"DBB1")
    other = BlobKey("default", "1.2.826.0.1.3680043.8.498.9", SERIES, "1.2.3.9")
    await _put(blobs, other, b"DBB1")
    await blobs.delete(_key("1.2.3.0"))
    await blobs.delete(_key("1.2.3.0"))  # gone already: nothing happens
    assert not await blobs.exists(_key("1.2.3.0")) and await blobs.exists(_key("1.2.3.1"))
    assert await blobs.remove_study("default", STUDY) == 2
    assert [k async for k in blobs.keys("default")] == [other]
    with pytest.raises(ValueError):
        await blobs.remove_study("default", "../..")


@pytest.mark.anyio
async def test_the_probe_answers(blobs: BlobStore) -> None:
    await blobs.probe()


def _stage_and_die(dsn: str) -> None:
    """A process that stages an object in PostgreSQL and ends without publishing it (a crash mid-C-STORE)."""
    code = ("import asyncio, sys; from dicom_node.blobs_postgres import PostgresBlobStore\n"
            "async def main():\n    s = PostgresBlobStore(sys.argv[1]); await s.open()\n"
            "    print(await s.stage('default', b'DBB1' + bytes(64)))\nasyncio.run(main())")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, dsn], capture_output=True, text=True, check=True, timeout=60)


@pytest.mark.anyio
async def test_the_sweep_removes_what_crashed_stores_staged_in_postgresql(postgres_server: ThrowawayPostgres) -> None:
    dsn = postgres_server.create_database()
    engine = PostgresEngine(dsn)
    await engine.open()
    await engine.create_tenant("default")
    blobs = PostgresBlobStore(dsn)
    await blobs.open()
    try:
        await _put(blobs, _key("1.2.3.1"), b"DBB1 acknowledged")
        for _ in range(2):
            _stage_and_die(dsn)
        from_another_node = await blobs.stage("default", b"DBB1")
        in_flight = await blobs.stage("default", b"DBB1")  # this (live) process's: a store still running
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE \"default\".blob SET staged_by = 'elsewhere.1', staged_at = now() - "
                               "interval '1 hour' WHERE id = $1", from_another_node.id)  # fmt: skip
            assert await conn.fetchval('SELECT count(*) FROM "default".blob WHERE key IS NULL') == 4
            assert await blobs.sweep_incoming() == 3  # the two dead processes' and the stale one
            left = await conn.fetch('SELECT id FROM "default".blob WHERE key IS NULL')
            assert [row["id"] for row in left] == [in_flight.id]
            chunks = await conn.fetchval('SELECT count(*) FROM "default".blob_chunk')
            assert chunks == 2  # the acknowledged object's and the in-flight one's: none orphaned
        finally:
            await conn.close()
        assert await blobs.read(_key("1.2.3.1")) == b"DBB1 acknowledged"
    finally:
        await blobs.close()
        await engine.close()


@pytest.mark.interop
def test_an_acknowledged_store_survives_its_process_being_killed(
    tmp_path: Path, postgres_server: ThrowawayPostgres
) -> None:
    """Success is answered once the object is committed in PostgreSQL (published before the index commits): the
    process killed (-9) right after it, a new one serves the object."""
    data, dimse = tmp_path / "var", free_port()
    env = {"DERMBRIDGE_STORAGE": postgres_server.create_database(), "DERMBRIDGE_BLOBS": "postgresql",
           "DERMBRIDGE_DICOM_PORT": str(dimse), "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default",
           "DERMBRIDGE_INFERENCE_ENABLED": "false"}  # fmt: skip
    image = dermoscopic(patient_id="KILLED-1")
    with running_server(data, env=env) as server:
        c_store(dimse, image)
        server.process.kill()
        server.process.wait(timeout=60)
    assert not (data / "blobs").exists()  # nothing went to the file tree
    with running_server(data, env=env) as again:
        retrieved = again.retrieve(image)
        assert retrieved.status_code == 200, retrieved.text
        assert image.PixelData in retrieved.content
