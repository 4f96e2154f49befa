"""The DICOM conformance statement (PS3.2 Annex A layout): hand-checked content generated from the node's
own AE and configuration, and a statement that follows the settings of a running server."""

from __future__ import annotations

import ssl
from pathlib import Path

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from conformance.dicom import dicom_conformance
from dicom_node.callers import DicomCaller
from dicom_node.dimse import DimseConfig, MoveDestination, application_entity
from tests.conftest import make_client
from tests.server import free_port

ANNEX_A_ORDER = [
    "## 1. Networking",
    "#### 1.1.1 Application data flow",
    "#### 1.1.2 Functional definition of the AE",
    "#### 1.1.3 Sequencing of real-world activities",
    "##### 1.2.1.1 SOP classes",
    "##### 1.2.1.2 Association policies",
    "##### 1.2.1.3 Association initiation policy",
    "##### 1.2.1.4 Association acceptance policy",
    "### 1.3 Network interfaces",
    "### 1.4 Configuration",
    "## 2. Media interchange",
    "## 3. Support of character sets",
    "## 4. Security",
]


def _row(text: str, first_cell: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_the_sections_follow_annex_a() -> None:
    text = dicom_conformance(DimseConfig(), "keep")
    positions = [text.index(heading + "\n") for heading in ANNEX_A_ORDER]
    assert positions == sorted(positions)


def test_the_implementation_identity_is_the_one_the_ae_announces() -> None:
    text = dicom_conformance(DimseConfig(), "keep")
    ae = application_entity(DimseConfig())
    assert ae.implementation_class_uid == PYNETDICOM_IMPLEMENTATION_UID
    assert f"Implementation Class UID `{PYNETDICOM_IMPLEMENTATION_UID}`" in text
    assert f"Implementation Version Name `{PYNETDICOM_IMPLEMENTATION_VERSION}`" in text


def test_roles_and_accepted_contexts() -> None:
    text = dicom_conformance(DimseConfig(), "keep")
    # SOP class table: dermoscopic images are received (SCP) and sent on retrievals (SCU)
    assert "| Dermoscopic Photography Image Storage | 1.2.840.10008.5.1.4.1.1.77.1.7 | Yes | Yes |" in text
    # the AI results are only ever sent, never accepted
    sr = "Comprehensive 3D SR Storage (AI results and the signed-off decision, TID 1500)"
    assert f"| {sr} | 1.2.840.10008.5.1.4.1.1.88.34 | Yes | No |" in text
    assert "| Key Object Selection Document Storage (the signed-off decision's key images) |" in text
    assert "| Study Root Query/Retrieve Information Model - MOVE | 1.2.840.10008.5.1.4.1.2.2.2 | No | Yes |" in text
    accepted = text[text.index("##### 1.2.1.4") :]
    assert (
        _row(accepted, "Verification SOP Class") == "| Verification SOP Class | 1.2.840.10008.1.1 | TS-1 | SCP | None |"
    )
    segmentation = _row(accepted, "Segmentation Storage (AI lesion mask)")
    assert "SCU on C-GET associations only (C-STORE refused)" in segmentation
    assert segmentation.endswith("| SCP/SCU role selection |")
    assert "| Explicit VR Big Endian | 1.2.840.10008.1.2.2 |" in accepted  # pynetdicom's default for Q/R contexts
    assert "the first transfer syntax of the requestor's list" in accepted


def test_the_contexts_a_c_move_proposes() -> None:
    text = dicom_conformance(DimseConfig(), "keep")
    proposed = text[text.index("##### 1.2.1.3") : text.index("##### 1.2.1.4")]
    assert _row(proposed, "Dermoscopic Photography Image Storage").endswith(
        "| TS-M1, one context per syntax | SCU | None |"
    )
    assert "| TS-M2, one context per syntax | SCU | None |" in _row(proposed, "Segmentation Storage (AI lesion mask)")
    ts_m2 = proposed[proposed.index("Transfer syntax set TS-M2:") :]
    assert ts_m2.count("| Explicit VR Little Endian |") == 1 and "JPEG" not in ts_m2  # the AI results: two syntaxes
    ts_m1 = proposed[proposed.index("Transfer syntax set TS-M1:") : proposed.index("Transfer syntax set TS-M2:")]
    assert "| JPEG-LS Lossless Image Compression | 1.2.840.10008.1.2.4.80 |" in ts_m1
    assert "C-MOVE destinations: none configured." in proposed


def test_configuration_callers_and_security_follow_the_config() -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.verify_mode = ssl.CERT_REQUIRED
    config = DimseConfig(
        ae_title="SKINNODE",
        port=4242,
        ae_tenants={
            "WARDPC7": DicomCaller.model_validate({"tenant": "default", "roles": ["find"], "hosts": ["10.0.0.0/24"]}),
            "ARCHIVE9": "default",
        },
        move_destinations={"VIEWER": MoveDestination("VIEWER", "10.0.0.9", 104)},
        tls=tls,
        tls_port=2762,
    )
    text = dicom_conformance(config, "replace")
    assert "#### 1.2.1 `SKINNODE` AE specification" in text
    assert "| DERMBRIDGE_DICOM_PORT | 4242 |" in text and "| DERMBRIDGE_DICOM_TLS_PORT | 2762 |" in text
    assert "2 calling AE title(s) mapped to tenants (1 with echo, store, find, get, move; 1 with find, from" in text
    assert "WARDPC7" not in text and "ARCHIVE9" not in text  # the callers' credentials are not published
    assert "`VIEWER` (10.0.0.9:104)" in text
    assert "DICOM TLS on port 2762: TLS 1.2 or later" in text and "client certificates required" in text
    assert "Duplicate SOP Instance UID: **replace**" in text


def test_the_served_statement_changes_with_the_settings(tmp_path: Path) -> None:
    port = free_port()
    callers = {"DERMATOSCOPE1": {"tenant": "default", "roles": ["echo", "store"]}}
    with make_client(tmp_path / "var", dicom_port=port, dicom_max_associations=5, dicom_ae_tenants=callers) as client:
        text = client.get("/conformance/dicom").text
    assert f"listening on 127.0.0.1:{port}." in text and f"| DERMBRIDGE_DICOM_PORT | {port} |" in text
    assert "at most 5 open" in text and "| DERMBRIDGE_DICOM_MAX_ASSOCIATIONS | 5 |" in text
    assert "1 calling AE title(s) mapped to tenants (1 with echo, store)" in text
    default = dicom_conformance(DimseConfig(), "keep")
    assert "at most 64 open" in default and "at most 5 open" not in default
