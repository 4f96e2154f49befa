"""Per-AE roles (dicom_node/callers.py): each calling AE may use only its DIMSE services, and only from
its listed addresses. Driven by dcmtk's tools and a pynetdicom SCU against the real listener."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydantic import ValidationError
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    DermoscopicPhotographyImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    VLPhotographicImageStorage,
)

from dermbridge.settings import Settings
from dicom_node import statuses
from tests.conftest import make_client
from tests.dicom_factories import VL_PHOTOGRAPHIC, dermoscopic, write
from tests.dicom_node.conftest import DicomNode
from tests.server import free_port, running_server

pytestmark = pytest.mark.interop
CALLERS: dict[str, Any] = {
    "DERMATOSCOPE": {"tenant": "default", "roles": ["echo", "store"]},
    "VIEWER": {"tenant": "default", "roles": ["echo", "find", "get"]},
    "LEGACY": "default",  # the plain form: the default roles (all five unless DICOM_DEFAULT_ROLES says otherwise)
    "STORESCU": "default",
    "WARDPC": {"tenant": "default", "roles": ["echo", "find"], "hosts": ["192.0.2.0/24", "2001:db8::/32"]},
    "LOCALPC": {"tenant": "default", "roles": ["echo"], "hosts": ["127.0.0.1"]},
}
NO_CONTEXT = re.compile(r"No (Acceptable|adequate) Presentation Contexts")  # findscu and movescu; getscu


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DicomNode]:
    port, move_port = free_port(), free_port()
    data_dir = tmp_path / "var"
    with make_client(data_dir, dicom_port=port, dicom_ae_tenants=CALLERS,
                     dicom_move_destinations={"MOVEDEST": f"127.0.0.1:{move_port}"}) as client:  # fmt: skip
        client.post("/fhir/default/$nothing")  # the app is up (lifespan ran)
        yield DicomNode(client, port, data_dir, move_port)


def audit(node: DicomNode) -> list[dict[str, str]]:
    path = node.data_dir / "audit" / "dicom.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def stored_study(node: DicomNode, tmp_path: Path) -> pydicom.Dataset:
    ds = dermoscopic(sop_class=VL_PHOTOGRAPHIC)  # getscu's built-in context list predates Dermoscopic Photography
    node.run("storescu", str(write(ds, tmp_path / "in")), aet="DERMATOSCOPE", check=True)
    return ds


def test_a_store_only_ae_stores_and_echoes_but_cannot_query_or_retrieve(node: DicomNode, tmp_path: Path) -> None:
    ds = stored_study(node, tmp_path)  # storing as DERMATOSCOPE succeeded (check=True)
    assert node.stored(ds.SOPInstanceUID).SOPInstanceUID == ds.SOPInstanceUID
    assert node.run("echoscu", aet="DERMATOSCOPE").returncode == 0
    study = f"StudyInstanceUID={ds.StudyInstanceUID}"
    find = node.run("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*", "-k", study,
                    aet="DERMATOSCOPE")  # fmt: skip
    assert find.returncode != 0 and NO_CONTEXT.search(find.stderr) and "Find Response" not in find.stderr
    out = tmp_path / "out"
    out.mkdir()
    get = node.run("getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", study, "-od", str(out), aet="DERMATOSCOPE")
    assert get.returncode != 0 and NO_CONTEXT.search(get.stderr) and not list(out.iterdir())
    move = node.run("movescu", "-S", "-aem", "MOVEDEST", "-k", "QueryRetrieveLevel=STUDY", "-k", study,
                    aet="DERMATOSCOPE")  # fmt: skip
    assert move.returncode != 0 and NO_CONTEXT.search(move.stderr)
    expected = {
        "not permitted for this AE: find",
        "not permitted for this AE: get",
        "not permitted for this AE: find, move",
    }  # movescu proposes both
    deadline = time.monotonic() + 60  # the node writes an association's record after the peer has gone
    while (withheld := _withheld(node)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert withheld == expected


def _withheld(node: DicomNode) -> set[str]:
    return {e["detail"] for e in audit(node)
            if e["callingAE"] == "DERMATOSCOPE" and e["outcome"] == "accepted" and e["detail"]}  # fmt: skip


def test_pynetdicom_sees_the_contexts_refused_at_association(node: DicomNode) -> None:
    ae = AE(ae_title="DERMATOSCOPE")
    for sop_class in (
        Verification,
        DermoscopicPhotographyImageStorage,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    ):
        ae.add_requested_context(sop_class)  # fmt: skip
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert accepted == {Verification, DermoscopicPhotographyImageStorage}
        refused = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
        assert refused == dict.fromkeys((StudyRootQueryRetrieveInformationModelFind,
                                         StudyRootQueryRetrieveInformationModelGet,
                                         StudyRootQueryRetrieveInformationModelMove), 0x03)  # fmt: skip
        assert assoc.send_c_echo().Status == statuses.SUCCESS
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = "*"
        with pytest.raises(ValueError, match="presentation context"):
            next(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()


def test_an_ae_with_find_and_get_queries_and_retrieves_but_may_not_store(node: DicomNode, tmp_path: Path) -> None:
    ds = stored_study(node, tmp_path)
    study = f"StudyInstanceUID={ds.StudyInstanceUID}"
    find = node.run("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*", "-k", study,
                    aet="VIEWER")  # fmt: skip
    assert find.returncode == 0, find.stderr
    assert len([line for line in find.stderr.splitlines() if "Find Response" in line]) == 1
    out = tmp_path / "out"
    out.mkdir()
    get = node.run("getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", study, "-od", str(out), aet="VIEWER")
    assert get.returncode == 0, get.stderr
    assert [pydicom.dcmread(p).SOPInstanceUID for p in out.iterdir()] == [ds.SOPInstanceUID]
    # storage contexts stay offered to an AE that may C-GET (its sub-operations use them); a C-STORE on one is refused
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(VLPhotographicImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    try:
        assert assoc.is_established
        other = dermoscopic(sop_class=VL_PHOTOGRAPHIC, seed=7)
        response = assoc.send_c_store(other)
        assert response.Status == statuses.NOT_AUTHORIZED
        assert response.ErrorComment == "AE VIEWER may not use C-STORE"
    finally:
        assoc.release()
    with pytest.raises(AssertionError):
        node.stored(other.SOPInstanceUID)
    refusals = [e for e in audit(node) if e["action"] == "C-STORE" and e["callingAE"] == "VIEWER"]
    assert [(e["outcome"], e["detail"]) for e in refusals] == [
        ("failure", "not authorized: AE VIEWER may not use C-STORE")
    ]


def test_the_plain_form_keeps_every_service(node: DicomNode, tmp_path: Path) -> None:
    ds = stored_study(node, tmp_path)
    find = node.run("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                    aet="LEGACY")  # fmt: skip
    assert find.returncode == 0, find.stderr
    assert "Find Response" in find.stderr


def test_the_plain_form_takes_the_configured_default_roles(tmp_path: Path) -> None:
    port = free_port()
    with make_client(tmp_path / "var", dicom_port=port, dicom_ae_tenants={"LEGACY": "default"},
                     dicom_default_roles=["echo", "store"]) as client:  # fmt: skip
        client.post("/fhir/default/$nothing")
        node = DicomNode(client, port, tmp_path / "var", free_port())
        assert node.run("echoscu", aet="LEGACY").returncode == 0
        find = node.run("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*", aet="LEGACY")
        assert find.returncode != 0 and NO_CONTEXT.search(find.stderr)


def test_an_ae_calling_from_an_address_it_does_not_list_is_rejected(node: DicomNode) -> None:
    refused = node.run("echoscu", aet="WARDPC")  # it may call from 192.0.2.0/24 only; this is 127.0.0.1
    assert (
        refused.returncode != 0 and "Rejected" in refused.stderr and "Calling AE Title Not Recognized" in refused.stderr
    )
    assert node.run("echoscu", aet="LOCALPC").returncode == 0  # 127.0.0.1 is its listed address
    stranger = node.run("echoscu", aet="STRANGER")  # unknown AE titles: refused as before
    assert stranger.returncode != 0 and "Calling AE Title Not Recognized" in stranger.stderr
    rejected = {e["callingAE"]: e["tenant"] for e in audit(node) if e["outcome"] == "rejected"}
    assert rejected == {"WARDPC": "default", "STRANGER": None}


@pytest.mark.parametrize(
    "entry",
    [
        {"tenant": "default"},  # the new form names its roles
        {"tenant": "default", "roles": ["echo", "delete"]},
        {"tenant": "default", "roles": ["echo"], "hosts": ["not-an-address"]},
        {"tenant": "default", "roles": ["echo"], "allowFind": True},
    ],
)
def test_a_malformed_entry_stops_the_start(tmp_path: Path, entry: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, dicom_ae_tenants={"AE1": entry})


def test_the_environment_takes_both_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both = {
        "PACS": "default",
        "DERMATOSCOPE1": {"tenant": "default", "roles": ["echo", "store"], "hosts": ["10.0.0.0/24"]},
    }
    monkeypatch.setenv("DERMBRIDGE_DICOM_AE_TENANTS", json.dumps(both))
    settings = Settings(data_dir=tmp_path)
    assert settings.dicom_ae_tenants["PACS"] == "default"
    dermatoscope = settings.dicom_ae_tenants["DERMATOSCOPE1"]
    assert not isinstance(dermatoscope, str)
    assert dermatoscope.roles == {"echo", "store"}
    assert dermatoscope.calls_from("10.0.0.7") and dermatoscope.calls_from("::ffff:10.0.0.7")
    assert not dermatoscope.calls_from("10.0.1.7") and not dermatoscope.calls_from("garbage")


def test_the_conformance_statement_states_the_restrictions_without_naming_the_aes(node: DicomNode) -> None:
    statement = node.client.get("/conformance/dicom").text
    assert "0124 (Refused: Not authorized)" in statement
    assert not any(ae in statement for ae in CALLERS)


def test_a_server_started_as_the_readme_says_applies_and_prints_the_roles(tmp_path: Path) -> None:
    port = free_port()
    callers = {"DERMATOSCOPE1": {"tenant": "default", "roles": ["echo", "store"]}, "STORESCU": "default",
               "WARDPC": {"tenant": "default", "roles": ["find"], "hosts": ["10.0.0.0/24"]}}  # fmt: skip
    env = {"DERMBRIDGE_DICOM_AE_TENANTS": json.dumps(callers), "DERMBRIDGE_DICOM_PORT": str(port)}
    with running_server(tmp_path / "var", env=env) as server:
        dermatoscope = ["-aet", "DERMATOSCOPE1", "-aec", "DERMBRIDGE", "127.0.0.1", str(port)]
        assert subprocess.run(["echoscu", *dermatoscope], capture_output=True, timeout=60).returncode == 0
        find = subprocess.run(["findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*", *dermatoscope],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert find.returncode != 0 and NO_CONTEXT.search(find.stderr)
    assert "DERMATOSCOPE1->default (echo, store)" in server.output
    assert "STORESCU->default (echo, store, find, get, move)" in server.output
    assert "WARDPC->default (find) from 10.0.0.0/24" in server.output
