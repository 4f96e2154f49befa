"""/healthz, /readyz, /metrics and the JSON access and association logs of a served process (real
sockets: httpx2 against ``dermbridge serve``, pynetdicom as the DICOM client)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx2
from pynetdicom import AE

from dermbridge.health import readiness
from dicom_node.blobs import FileBlobStore
from fhir_server.storage.sqlite import SqliteEngine
from tests.dicom_factories import dermoscopic
from tests.server import free_port, running_server

NAME, MRN = "Zebediah", "MRN-778899"
METRICS_TOKEN = "metrics-token-0123456789"


def _lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def _labels(exposition: str) -> list[str]:
    """Every label value of every sample of a Prometheus text exposition."""
    return [value for line in exposition.splitlines() if not line.startswith("#")
            for value in re.findall(r'="((?:[^"\\]|\\.)*)"', line)]  # fmt: skip


def test_probes_metrics_and_logs_name_routes_never_people(tmp_path: Path) -> None:
    dimse = free_port()
    env = {"DERMBRIDGE_DICOM_PORT": str(dimse), "DERMBRIDGE_DICOM_AE_TENANTS": '{"DERMATOSCOPE": "default"}',
           "DERMBRIDGE_METRICS_TOKEN": METRICS_TOKEN, "DERMBRIDGE_FORWARDED_ALLOW_IPS": "127.0.0.1"}  # fmt: skip
    with running_server(tmp_path / "var", env=env) as server:
        http = server.http
        alive = httpx2.get(f"{server.root}/healthz")
        assert alive.status_code == 200 and alive.json() == {"status": "alive", "role": "all"}
        ready = httpx2.get(f"{server.root}/readyz").json()
        assert ready["status"] == "ready"
        assert set(ready["checks"]) == {"database", "migrations", "blobs", "consumers", "subscriptions", "dimse"}
        body = {"resourceType": "Patient", "name": [{"family": NAME}],
                "identifier": [{"system": "urn:clinic:mrn", "value": MRN}]}  # fmt: skip
        patient_id = http.post(f"{server.base}/Patient", json=body).json()["id"]
        found = http.get(f"{server.base}/Patient", params={"name": NAME, "identifier": f"urn:clinic:mrn|{MRN}"})
        assert found.json()["total"] == 1
        assert http.get(f"{server.base}/Patient/{patient_id}/_history/1").status_code == 200
        assert http.get(f"{server.base}/Patient/{patient_id}/$everything").status_code == 200
        assert http.get(f"{server.base}/{NAME}/{MRN}").status_code == 404  # a typed path: no template of its own
        _store(dimse, NAME, MRN)

        exposition = _scraped(server.root, 'dermbridge_outbox_pending_events{consumer="workflow"}')  # loopback
        remote = {"X-Forwarded-For": "203.0.113.9"}  # through the trusted proxy: the caller is not on loopback
        refused = httpx2.get(f"{server.root}/metrics", headers=remote)
        forwarded = httpx2.get(f"{server.root}/metrics", headers={**remote, "Authorization": f"Bearer {METRICS_TOKEN}"})
    assert refused.status_code == 403 and forwarded.status_code == 200

    samples = [line for line in exposition.splitlines() if not line.startswith("#")]
    assert any(s.startswith('dermbridge_http_requests_total{method="GET",route="/fhir/{tenant}/Patient",'
                            'status="200"}') for s in samples)  # fmt: skip
    for route in ("/fhir/{tenant}/Patient/{id}/_history/{vid}", "/fhir/{tenant}/Patient/{id}/$everything",
                  "/fhir/{tenant}/{type}/{id}"):  # fmt: skip
        assert f'route="{route}"' in exposition, route
    assert 'dermbridge_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/fhir/{tenant}/Patient"}' \
        in exposition  # fmt: skip
    assert 'dermbridge_dimse_operations_total{operation="C-STORE",outcome="success"} 1.0' in samples
    assert 'dermbridge_dimse_associations_total{outcome="accepted"} 1.0' in samples
    for gauge in ("dermbridge_outbox_pending_events{consumer=\"workflow\"}", "dermbridge_audit_staged_events",
                  "dermbridge_db_pool_connections ", "dermbridge_db_pool_connections_in_use"):  # fmt: skip
        assert any(s.startswith(gauge) for s in samples), gauge
    for value in _labels(exposition):  # no personal data, no resource id, no tenant in any label
        assert not {NAME, MRN, patient_id, "default"} & {value, *value.split("/")}, value

    log = server.output
    assert NAME not in log and MRN not in log and patient_id not in log and server.token not in log
    lines = _lines(log)
    requests = [line for line in lines if line.get("event") == "http.request"]
    search = next(r for r in requests if r["route"] == "/fhir/{tenant}/Patient" and r["method"] == "GET")
    assert search["status"] == 200 and search["tenant"] == "default" and search["client_id"].startswith("default.")
    assert search["duration_ms"] > 0 and search["level"] == "INFO" and search["logger"] == "dermbridge.access"
    assert not any(r["route"] in ("/healthz", "/readyz", "/metrics") for r in requests)  # probes are not logged
    association = next(line for line in lines if line.get("event") == "dicom.association")
    assert association["calling_ae"] == "DERMATOSCOPE" and association["tenant"] == "default"
    assert association["status"] == "released" and association["operations"] == {"C-STORE success": 1}


def _scraped(root: str, series: str) -> str:
    """/metrics once ``series`` is in it (the workflow consumer has claimed its first events)."""
    deadline = time.monotonic() + 60
    while series not in (exposition := httpx2.get(f"{root}/metrics").text):
        assert time.monotonic() < deadline, f"{series} never appeared in /metrics"
        time.sleep(0.1)
    return exposition


def _store(port: int, name: str, patient_id: str) -> None:
    ds = dermoscopic(patient_id=patient_id, patient_name=f"{name}^ANNA")
    ae = AE(ae_title="DERMATOSCOPE")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()


def test_readiness_names_what_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    unwritable = FileBlobStore(tmp_path / "a-file" / "blobs")  # a blob root that cannot be made

    async def checks() -> dict[str, str]:
        engine = SqliteEngine(tmp_path)
        await engine.open()
        try:
            return await readiness(engine, "absent", {"consumers": lambda: False, "dimse": lambda: True}, unwritable)
        finally:
            await engine.close()

    missing = "reachable, but tenant 'absent' does not exist: run `dermbridge tenant create absent`"
    assert asyncio.run(checks()) == {"database": missing, "consumers": "not running", "dimse": "ok",
                                     "blobs": "unavailable: NotADirectoryError"}  # fmt: skip
