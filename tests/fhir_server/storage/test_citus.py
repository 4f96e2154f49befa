"""DermBridge on Citus (README "Citus"): the tenant's schema, made by the server as on plain PostgreSQL, is a
distributed schema (schema-based sharding) living on the worker; the whole server runs on it through the
coordinator: a C-STORE (its object in the database, ``blobs=postgresql``), FHIR search, WADO-RS, the audit trail.

Skipped, saying why, where the ``citus`` extension is not installed (Debian has no package; ``tests/citus.py``).
The engine contract runs on Citus too (``test_contract.py``, the ``citus`` rows).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.citus import CitusCluster
from tests.dermbridge.test_storage_copy import dermbridge
from tests.dicom_factories import dermoscopic
from tests.dicom_scu import c_store
from tests.server import free_port, running_server

pytestmark = pytest.mark.interop


async def _placement(dsn: str) -> tuple[list[str], set[int]]:
    """The distributed schemas, and the ports of the nodes holding the ``default`` tenant's shards."""
    conn = await asyncpg.connect(dsn)
    try:
        schemas = await conn.fetch("SELECT n.nspname FROM citus_schemas s JOIN pg_namespace n ON n.oid = s.schema_name")
        ports = await conn.fetch(
            "SELECT DISTINCT s.nodeport FROM citus_shards s JOIN pg_class c ON c.oid = s.table_name "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'default'"
        )
        return sorted(str(r["nspname"]) for r in schemas), {int(r["nodeport"]) for r in ports}
    finally:
        await conn.close()


def test_the_server_runs_on_a_tenant_schema_distributed_to_a_worker(citus: CitusCluster, tmp_path: Path) -> None:
    dsn, data, dimse = citus.create_database(), tmp_path / "var", free_port()
    env = {"DERMBRIDGE_STORAGE": dsn, "DERMBRIDGE_BLOBS": "postgresql", "DERMBRIDGE_DICOM_PORT": str(dimse),
           "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default", "DERMBRIDGE_INFERENCE_ENABLED": "false"}  # fmt: skip
    image = dermoscopic(patient_id="CITUS-1")
    with running_server(data, env=env) as server:
        schemas, ports = asyncio.run(_placement(dsn))
        assert "default" in schemas and ports == {citus.worker.port}  # the tenant lives on the worker
        assert server.http.get(f"{server.root}/readyz").json()["status"] == "ready"
        c_store(dimse, image)
        found = server.http.get(f"{server.base}/Patient", params={"identifier": "urn:clinic:mrn|CITUS-1"}).json()
        assert found["total"] == 1
        patient = found["entry"][0]["resource"]["id"]
        studies = server.http.get(f"{server.base}/ImagingStudy", params={"patient": patient})
        assert studies.json()["total"] == 1
        retrieved = server.retrieve(image)
        assert retrieved.status_code == 200 and image.PixelData in retrieved.content
    verified = dermbridge("audit", "verify", "--data-dir", str(data), storage=dsn)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
