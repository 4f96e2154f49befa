"""Staged objects left in ``.incoming`` by a store cut short (a crash mid-C-STORE) are removed when
the node starts; committed instances and stores still in flight are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from dicom_node.blobs import STALE_AFTER_S, BlobKey, FileBlobStore
from tests.conftest import make_client
from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import AE_TENANTS, stored_dataset
from tests.server import free_port

pytestmark = pytest.mark.interop


def _stage_and_die(root: Path) -> Path:
    """A process that stages an object and ends without publishing it, as a crash mid-C-STORE does."""
    code = "import sys; from pathlib import Path; from dicom_node.blobs import FileBlobStore; "
    code += "print(FileBlobStore(Path(sys.argv[1])).stage_file('default', b'DBB1' + bytes(64)))"
    staged = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    return Path(staged.stdout.strip())


def test_orphaned_staged_files_are_removed_on_start(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    ds = dermoscopic()
    path = write(ds, tmp_path / "in")
    with make_client(data_dir, dicom_port=port, dicom_ae_tenants=AE_TENANTS) as client:
        client.post("/fhir/default/$nothing")
        command = ["storescu", "-R", "-aet", "STORESCU", "-aec", "DERMBRIDGE", "127.0.0.1", str(port), str(path)]
        assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    blobs = FileBlobStore(data_dir / "blobs")
    committed = blobs.path(BlobKey("default", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    crashed = [_stage_and_die(blobs.root) for _ in range(3)]
    from_an_old_version = blobs.root / "default" / ".incoming" / "tmpa1b2c3d4"
    from_an_old_version.write_bytes(b"DBB1")
    hour_ago = time.time() - STALE_AFTER_S - 60
    os.utime(from_an_old_version, (hour_ago, hour_ago))
    in_flight = blobs.stage_file("default", b"DBB1")  # this (live) process's: a store still running
    assert all(p.exists() for p in (*crashed, from_an_old_version, in_flight))

    with make_client(data_dir, dicom_port=port, dicom_ae_tenants=AE_TENANTS) as client:
        client.post("/fhir/default/$nothing")  # started
        assert not any(p.exists() for p in (*crashed, from_an_old_version))
        assert in_flight.exists()
        assert committed.exists()
        kept = stored_dataset(client, ds.SOPInstanceUID)
        assert kept.PixelData == pydicom.dcmread(path).PixelData
