"""The camera or dermatoscope an image was taken with (DICOM General Equipment module) becomes one R4
``Device`` per manufacturer, model and serial number, named by each image's ``Media.device``; a client
cannot write (or forge) such a Device."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from tests.conftest import BASE, FhirTestClient
from tests.dicom_factories import dermoscopic, stow_body


def stow(client: FhirTestClient, seed: int, serial: str | None, model: str | None = "DermScope 5") -> Dataset:
    ds = dermoscopic(patient_id="CAM-1", seed=seed, accession=f"CAM-{seed}")
    ds.Manufacturer = "Acme Optics"
    if model is not None:
        ds.ManufacturerModelName = model
    if serial is not None:
        ds.DeviceSerialNumber = serial
    ds.SoftwareVersions = ["2.1", "fw-7"]
    body, media = stow_body(ds)
    assert client.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media}).status_code == 200
    return ds


def media_device(client: FhirTestClient, ds: Dataset) -> dict[str, str] | None:
    found = client.get(f"{BASE}/Media", params={"identifier": f"urn:dicom:uid|urn:oid:{ds.SOPInstanceUID}"}).json()
    (entry,) = found["entry"]
    return entry["resource"].get("device")


def test_each_images_device_is_named_once_per_serial_number(client: FhirTestClient, tmp_path: Path) -> None:
    first, second = stow(client, 1, "SN-77"), stow(client, 2, "SN-77")
    other = stow(client, 3, "SN-78")
    unnamed = stow(client, 4, "SN-79", model=None)  # no model: no device is claimed
    one, again, another = media_device(client, first), media_device(client, second), media_device(client, other)
    assert one is not None and another is not None
    assert one == again and one != another
    assert one["display"] == "Acme Optics DermScope 5"
    assert media_device(client, unnamed) is None
    device = client.get(f"{BASE}/{one['reference']}").json()
    assert (device["manufacturer"], device["serialNumber"]) == ("Acme Optics", "SN-77")
    assert device["deviceName"] == [{"name": "DermScope 5", "type": "model-name"}]
    assert device["version"] == [{"value": "2.1, fw-7"}]


def test_a_client_cannot_write_an_imaging_device(client: FhirTestClient) -> None:
    ds = stow(client, 5, "SN-80")
    reference = media_device(client, ds)
    assert reference is not None
    current = client.get(f"{BASE}/{reference['reference']}").json()
    forged = {**current, "manufacturer": "Someone Else"}
    assert client.put(f"{BASE}/{reference['reference']}", json=forged).status_code == 409
    assert client.delete(f"{BASE}/{reference['reference']}").status_code == 409
    planted = {"resourceType": "Device", "identifier": current["identifier"], "manufacturer": "Planted"}
    refused = client.post(f"{BASE}/Device", json=planted)
    assert refused.status_code == 409, refused.text
    assert "DICOM ingest only" in refused.json()["issue"][0]["diagnostics"]
