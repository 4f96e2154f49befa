"""DICOM peers changed on the admin page apply to the next association of a separate ``serve --role dicom``
process, without a restart (issue 18, "Admin"): the listener reads the tenant's peers from the database
before each association. Real parts: two server processes on one data directory, an admin signed in over
HTTP (httpx, the session cookie and the pages' CSRF token), dcmtk's echoscu, storescu and movescu, and
dcmtk's storescp as the C-MOVE destination."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.dicom_factories import VL_PHOTOGRAPHIC, dermoscopic, write
from tests.dicom_node.conftest import wait_for
from tests.server import free_port, running_server

pytestmark = pytest.mark.interop
PASSWORD = "correct horse battery"
# the environment's entries: seeded into the tenant's database on the first start, then edited on the page
ENV = {"DERMBRIDGE_DICOM_AE_TENANTS": json.dumps({"LEGACY": {"tenant": "default", "roles": ["echo"]}})}


def dcmtk(tool: str, port: int, *args: str, files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [tool, "-aet", "NEWDEVICE", "-aec", "DERMBRIDGE", *args, "127.0.0.1", str(port), *files]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@contextmanager
def storescp(port: int, into: Path) -> Iterator[subprocess.Popen[str]]:
    """dcmtk's Storage SCP as the C-MOVE destination VIEWER (stopped by its own process id)."""
    into.mkdir(parents=True)
    process = subprocess.Popen(["storescp", "-aet", "VIEWER", "-od", str(into), str(port)], text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


class AdminPage:
    """An administrator signed in on the API process, posting the DICOM page's forms."""

    def __init__(self, root: str) -> None:
        self.http = httpx2.Client(base_url=root, timeout=60)
        login = self.http.get("/auth/login")
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', login.text))
        signed = self.http.post("/auth/login", data={**form, "username": "ada", "password": PASSWORD})
        assert signed.status_code == 303, signed.text  # to the app
        self.csrf = str(self.http.get("/auth/session").json()["csrf"])

    def post(self, path: str, **fields: str) -> None:
        answer = self.http.post(f"/app/admin/dicom/{path}", data={"csrf": self.csrf, **fields}, follow_redirects=False)
        assert answer.status_code == 303, answer.text


def test_an_admin_change_applies_to_the_next_association_of_a_dicom_process(tmp_path: Path) -> None:
    data, dimse = tmp_path / "var", free_port()
    env = {**ENV, "DERMBRIDGE_DICOM_PORT": str(dimse)}
    with ExitStack() as stack:
        api = stack.enter_context(running_server(data, env=env, role="api"))
        body = {"resourceType": "Practitioner", "id": "p-ada"}
        assert api.http.put(f"{api.base}/Practitioner/p-ada", json=body).status_code == 201
        made = subprocess.run(
            [sys.executable, "-m", "dermbridge", "user", "create", "--username", "ada", "--practitioner", "p-ada",
             "--role", "admin", "--password-stdin", "--data-dir", str(data)],
            input=PASSWORD + "\n", capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        stack.enter_context(running_server(data, env=env, admin=False, role="dicom"))
        admin = AdminPage(api.root)
        stack.callback(admin.http.close)
        page = admin.http.get("/app/admin/dicom").text
        assert 'data-ae="LEGACY"' in page  # seeded from the environment on the first start

        ds = dermoscopic(sop_class=VL_PHOTOGRAPHIC)
        image = str(write(ds, tmp_path / "in"))
        assert dcmtk("echoscu", dimse).returncode != 0  # not configured: the association is rejected
        admin.post("caller/save", ae_title="NEWDEVICE", **{"service-echo": "on", "service-store": "on",
                                                           "service-find": "on", "service-move": "on"})  # fmt: skip
        assert dcmtk("echoscu", dimse).returncode == 0  # the running dicom process: no restart
        stored = dcmtk("storescu", dimse, "-R", files=(image,))
        assert stored.returncode == 0, stored.stderr

        viewer, received = free_port(), tmp_path / "viewer"
        stack.enter_context(storescp(viewer, received))
        study = f"StudyInstanceUID={ds.StudyInstanceUID}"
        move = ("-S", "-aem", "VIEWER", "-k", "QueryRetrieveLevel=STUDY", "-k", study)
        unknown = dcmtk("movescu", dimse, *move)
        assert "MoveDestinationUnknown" in unknown.stderr, unknown.stderr
        admin.post("destination/save", ae_title="VIEWER", host="127.0.0.1", port=str(viewer))
        moved = dcmtk("movescu", dimse, *move)
        assert moved.returncode == 0, moved.stderr
        assert wait_for(lambda: any(received.iterdir()), 60)  # storescp received the image

        admin.post("caller/save", ae_title="NEWDEVICE", **{"service-echo": "on"})  # store taken away
        refused = dcmtk("storescu", dimse, "-R", files=(image,))
        assert refused.returncode != 0
        assert dcmtk("echoscu", dimse).returncode == 0
        admin.post("caller/remove", ae_title="NEWDEVICE")
        assert dcmtk("echoscu", dimse).returncode != 0
