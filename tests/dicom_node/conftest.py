from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.attributes import INSTANCE
from tests.conftest import FhirTestClient, make_client
from tests.server import free_port

AE_TENANTS = {"STORESCU": "default", "FINDSCU": "default", "GETSCU": "default", "MOVESCU": "default",
              "ECHOSCU": "default", "PYNETDICOM": "default", "OTHERCLINIC": "north"}  # fmt: skip


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Whether ``condition`` becomes true within ``seconds`` (a generous bound, never a sleep to pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def stored_dataset(client: FhirTestClient, instance_uid: str, tenant: str = "default") -> pydicom.Dataset:
    """The object as the node keeps it (read and opened through the node: on disk it is sealed)."""
    app: Any = client.app

    async def read() -> pydicom.Dataset:
        store = await app.state.engine.tenant(tenant)
        record = await store.get_record(INSTANCE, instance_uid)
        assert record is not None, f"no instance {instance_uid}"
        dataset: pydicom.Dataset = await app.state.dicomweb.read_dataset(tenant, record)
        return dataset

    return client.portal.call(read)


class DicomNode:
    def __init__(self, client: FhirTestClient, port: int, data_dir: Path, move_port: int) -> None:
        self.client = client
        self.port = port
        self.data_dir = data_dir
        self.move_port = move_port

    def run(
        self, tool: str, *args: str, aet: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a dcmtk tool against the node (calling AE = the tool's name unless given)."""
        command = [tool, "-aet", aet or tool.upper(), "-aec", "DERMBRIDGE", *args, "127.0.0.1", str(self.port)]
        if tool in ("storescu",):  # files come after host and port
            files = [a for a in args if a.endswith(".dcm") or Path(a).is_dir()]
            options = [a for a in args if a not in files]
            # -R: propose the files' own SOP classes (storescu's default list lacks Dermoscopic Photography)
            options = options if "-R" in options else ["-R", *options]
            command = [tool, "-aet", aet or "STORESCU", "-aec", "DERMBRIDGE", *options, "127.0.0.1", str(self.port),
                       *files]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check)

    def stored(self, instance_uid: str) -> pydicom.Dataset:
        return stored_dataset(self.client, instance_uid)


@contextmanager
def running_node(tmp_path: Path, **settings: Any) -> Iterator[DicomNode]:
    """A node on its own ports and data directory (``settings``: e.g. the engine's)."""
    port, move_port = free_port(), free_port()
    data_dir = tmp_path / "var"
    client = make_client(
        data_dir,
        dicom_port=port,
        dicom_ae_tenants=AE_TENANTS,
        dicom_move_destinations={"MOVEDEST": f"127.0.0.1:{move_port}"},
        **settings,
    )
    with client:
        client.post("/fhir/default/$nothing")  # the app is up (lifespan ran)
        yield DicomNode(client, port, data_dir, move_port)


@pytest.fixture
def node(tmp_path: Path, engine: dict[str, Any]) -> Iterator[DicomNode]:
    with running_node(tmp_path, **engine) as started:
        yield started
