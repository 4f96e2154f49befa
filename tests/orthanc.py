"""A real Orthanc (Debian's ``/usr/sbin/Orthanc`` with its DICOMweb plugin) as the peer PACS of a test: its own
JSON configuration and storage in a temporary directory, free loopback DICOM and HTTP ports, started and
waited for on its REST API (a bounded wait on a condition), stopped at the end. Never the system service.

    with running_orthanc(tmp_path) as orthanc:              # or the ``orthanc`` fixture (tests/conftest.py)
        orthanc.destination()                                # a DermBridge forwarding destination for it
        orthanc.get("/instances")                            # Orthanc's REST API (book.orthanc-server.com)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.server import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
START_TIMEOUT = 60.0
UNCOMPRESSED = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]  # Implicit and Explicit VR Little Endian


@dataclass
class Orthanc:
    ae_title: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log: Path
    http: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx2.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=60)

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = self.http.post(path, content=json.dumps(body))
        assert response.status_code == 200, response.text
        return response.json()

    def destination(self, **extra: Any) -> dict[str, Any]:
        """This Orthanc as a destination of DermBridge's forwarding configuration."""
        return {"aeTitle": self.ae_title, "host": "127.0.0.1", "port": self.dicom_port, **extra}

    def sop_classes(self) -> dict[str, str]:
        """Each stored instance's SOP Instance UID -> SOP Class UID (Orthanc's main DICOM tags and metadata)."""
        found = {}
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            found[str(tags["SOPInstanceUID"])] = str(tags["SOPClassUID"])
        return found

    def transfer_syntax(self, sop_instance_uid: str) -> str:
        """The transfer syntax Orthanc stored the instance in (its ``TransferSyntax`` metadata)."""
        response = self.http.post("/tools/lookup", content=sop_instance_uid)
        assert response.status_code == 200, response.text
        [orthanc_id] = [item["ID"] for item in response.json() if item["Type"] == "Instance"]
        return self.http.get(f"/instances/{orthanc_id}/metadata/TransferSyntax").text

    def wait_for_instances(self, count: int, timeout: float = 120.0) -> dict[str, str]:
        """The stored instances once there are at least ``count`` (a bounded wait on a condition)."""
        deadline = time.monotonic() + timeout
        while len(ids := self.get("/instances")) < count:
            assert time.monotonic() < deadline, f"Orthanc holds {len(ids)} instances, not {count}, after {timeout} s"
            time.sleep(0.2)
        return self.sop_classes()


def _config(directory: Path, ae_title: str, dicom_port: int, http_port: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "Name": f"test-{ae_title}",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "storage"),
        "DicomAet": ae_title,
        "DicomServerEnabled": True,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,  # any calling AE may store (DermBridge is not declared as a modality)
        "UnknownSopClassAccepted": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
        "HttpTimeout": 30,
        **extra,
    }


@contextmanager
def running_orthanc(directory: Path, ae_title: str = "ORTHANC", **extra: Any) -> Iterator[Orthanc]:
    """An Orthanc on free loopback ports; ``extra`` overrides configuration options (``AcceptedTransferSyntaxes``,
    ``DicomWeb`` servers...)."""
    if not Path(ORTHANC).exists() or not Path(DICOMWEB_PLUGIN).exists():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (make system-deps)")
    directory.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = directory / "orthanc.json"
    config.write_text(json.dumps(_config(directory, ae_title, dicom_port, http_port, extra)))
    log = directory / "orthanc.log"
    with log.open("ab") as output:
        process = subprocess.Popen([ORTHANC, str(config)], stdout=output, stderr=subprocess.STDOUT)
    orthanc = Orthanc(ae_title, dicom_port, http_port, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"Orthanc exited:\n{log.read_text()[-3000:]}"
            try:
                if orthanc.http.get("/system").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"Orthanc did not answer in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.1)
        yield orthanc
    finally:
        orthanc.http.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory / "storage", ignore_errors=True)
