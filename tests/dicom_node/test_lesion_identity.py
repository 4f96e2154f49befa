"""A lesion keeps its identity across studies and visits (dicom_node.lesion_identity): two visits of
real C-STOREs (pynetdicom as SCU), under the default per-visit key (one series per lesion, linked by
an unambiguous site) and a stable key (a label the device writes at every visit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from dicom_node.lesions import LESION_SYSTEM, VISIT_SYSTEM
from tests.conftest import BASE, FhirTestClient, make_client
from tests.dicom_factories import dermoscopic
from tests.schema import assert_r4
from tests.server import free_port

SCT = "http://snomed.info/sct"


def _node(tmp_path: Path, **settings: Any) -> Iterator[tuple[FhirTestClient, int]]:
    port = free_port()
    with make_client(tmp_path / "var", dicom_port=port, dicom_any_ae_tenant="default", **settings) as client:
        yield client, port


@pytest.fixture
def by_series(tmp_path: Path) -> Iterator[tuple[FhirTestClient, int]]:
    yield from _node(tmp_path)


@pytest.fixture
def by_label(tmp_path: Path) -> Iterator[tuple[FhirTestClient, int]]:
    yield from _node(tmp_path, dicom_lesion_key={"default": "SeriesDescription"})


def visit() -> str:
    """A new study (visit) UID; each image of it gets a series of its own unless told otherwise."""
    return str(generate_uid())


def image(mrn: str, study: str, date: str, *, side: str = "L", label: str = "", site: str | None = "39937001",
          series: str | None = None) -> Dataset:  # fmt: skip
    ds = dermoscopic(patient_id=mrn, study_uid=study, series_uid=series, study_date=date, accession=date)
    ds.ImageLaterality = side
    ds.SeriesDescription = label
    if site is None:
        del ds.AnatomicRegionSequence
    else:
        ds.AnatomicRegionSequence[0].CodeValue = site
    return ds


def store(port: int, *datasets: Dataset, calling: str = "DERMATOSCOPE") -> None:
    """C-STORE over a real association; every store must succeed."""
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000, status
    finally:
        assoc.release()


def lesions(client: FhirTestClient) -> list[dict[str, Any]]:
    bundle = client.get(f"{BASE}/BodyStructure", params={"_count": "100"}).json()
    found = [e["resource"] for e in bundle.get("entry", [])]
    for lesion in found:
        assert_r4(lesion)
    return found


def visits(lesion: dict[str, Any]) -> int:
    return sum(1 for i in lesion["identifier"] if i["system"] == VISIT_SYSTEM)


def test_a_later_visits_series_joins_the_one_lesion_at_its_site(by_series: tuple[FhirTestClient, int]) -> None:
    client, port = by_series
    store(port, image("L-1", visit(), "20240105"))
    later = image("L-1", visit(), "20250110")
    store(port, later, image("L-1", later.StudyInstanceUID, "20250110", series=later.SeriesInstanceUID))
    [lesion] = lesions(client)
    assert visits(lesion) == 2  # one lesion, imaged at two visits
    assert sum(1 for i in lesion["identifier"] if i["system"] == LESION_SYSTEM) == 2  # its two series
    assert "Not linked" not in lesion["description"]
    assert lesion["location"]["coding"][0]["code"] == "39937001"
    first_visit = next(i["value"] for i in lesion["identifier"] if i["system"] == VISIT_SYSTEM)
    found = client.get(f"{BASE}/BodyStructure", params={"identifier": f"{VISIT_SYSTEM}|{first_visit}"})
    assert len(found.json()["entry"]) == 1  # the visit's lesions are searchable


def test_two_lesions_at_one_site_are_never_merged(by_series: tuple[FhirTestClient, int]) -> None:
    client, port = by_series
    first = visit()
    store(port, image("L-2", first, "20240105"), image("L-2", first, "20240105"))  # two series, one site
    two = lesions(client)
    assert len(two) == 2
    assert sum("has another series in this visit" in lesion["description"] for lesion in two) == 1
    store(port, image("L-2", visit(), "20250110"))
    three = lesions(client)
    assert len(three) == 3  # ambiguous: a new lesion, and it says why
    new = next(lesion for lesion in three if lesion["id"] not in {b["id"] for b in two})
    assert "2 lesions of the patient lie at this site" in new["description"]
    assert all(visits(lesion) == 1 for lesion in three)


def test_another_site_or_laterality_or_patient_is_another_lesion(by_series: tuple[FhirTestClient, int]) -> None:
    client, port = by_series
    store(port, image("L-3", visit(), "20240105", side="L"))
    later = visit()
    store(port, image("L-3", later, "20250110", side="R"), image("L-3", later, "20250110", site="16621002"),
          image("L-4", visit(), "20250110", side="L"))  # fmt: skip
    found = lesions(client)
    assert len(found) == 4 and all(visits(lesion) == 1 for lesion in found)
    assert not any("Not linked" in lesion["description"] for lesion in found)  # first at each site: nothing to say


def test_an_image_without_a_site_is_never_linked_by_site(by_series: tuple[FhirTestClient, int]) -> None:
    client, port = by_series
    store(port, image("L-5", visit(), "20240105", site=None))
    store(port, image("L-5", visit(), "20250110", site=None))
    found = lesions(client)
    assert len(found) == 2
    assert all("records no anatomic site" in lesion["description"] for lesion in found)


def test_a_stable_label_decides_identity(by_label: tuple[FhirTestClient, int]) -> None:
    """Keyed on a label: same label and site, same lesion; another label at the same site, another lesion
    (even when it is the only earlier one there: the device said it is not)."""
    client, port = by_label
    store(port, image("L-6", visit(), "20240105", label="Lesion 1"))
    later = visit()
    store(port, image("L-6", later, "20250110", label="Lesion 1"), image("L-6", later, "20250110", label="Lesion 2"))
    found = {lesion["description"].split("'")[1]: lesion for lesion in lesions(client)}
    assert set(found) == {"Lesion 1", "Lesion 2"}
    assert visits(found["Lesion 1"]) == 2 and visits(found["Lesion 2"]) == 1
    assert not any("Not linked" in lesion["description"] for lesion in found.values())
    store(port, image("L-6", visit(), "20260112"))  # no label: the series decides, the site is ambiguous
    unlabelled = [lesion for lesion in lesions(client) if lesion["id"] not in {b["id"] for b in found.values()}]
    assert len(unlabelled) == 1 and "2 lesions of the patient lie at this site" in unlabelled[0]["description"]


def test_each_tenant_keys_its_own_way(tmp_path: Path) -> None:
    """One node, two tenants: the same two visits make one lesion where the key is the series (the
    site is unambiguous) and two where the devices label lesions and the labels differ."""
    port = free_port()
    settings: dict[str, Any] = {"dicom_port": port, "dicom_ae_tenants": {"CAM": "default", "NORTHCAM": "north"},
                                "dicom_lesion_key": {"north": "SeriesDescription"}}  # fmt: skip
    with make_client(tmp_path / "var", **settings) as client:
        client.portal.call(client.app.state.engine.create_tenant, "north")  # type: ignore[attr-defined]
        north = {"Authorization": f"Bearer {client.token('north')}"}
        for calling in ("CAM", "NORTHCAM"):
            first, later = visit(), visit()
            store(port, image("L-7", first, "20240105", label="Lesion 1"), calling=calling)
            store(port, image("L-7", later, "20250110", label="Lesion 2"), calling=calling)
        assert len(lesions(client)) == 1
        bundle = client.get("/fhir/north/BodyStructure", headers=north).json()
        assert len(bundle["entry"]) == 2
