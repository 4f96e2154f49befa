"""The imaging device an image was acquired with, as an R4 ``Device`` its ``Media.device`` names.

DICOM's General Equipment module (PS3.3 C.7.5.1) says who made the device and which model it is:
Manufacturer (0008,0070), Manufacturer's Model Name (0008,1090), Device Serial Number (0018,1000) and
Software Versions (0018,1020). One ``Device`` per (manufacturer, model, serial number) in a tenant,
found again by its identifier, so that every image of a dermatoscope points at the same one and results
can be compared by device (``$ai-performance``'s ``imaging-device`` subgroup). An image without a
manufacturer or a model names no device.

The identifier (system ``urn:dermbridge:imaging-device``) is the server's: a client cannot write a
Device carrying it (``fhir_server.managed_content``), so no client-made Device is ever adopted.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydicom.dataset import Dataset

from fhir_server.errors import conflict
from fhir_server.managed_content import Content, register
from fhir_server.repository import Repository, Stored

SYSTEM = "urn:dermbridge:imaging-device"
MAX_TEXT = 64  # LO: at most 64 characters


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str):  # Software Versions is multi-valued
        value = ", ".join(str(v) for v in value)
    return str(value).strip()[:MAX_TEXT]


def device_label(ds: Dataset) -> str | None:
    """'Manufacturer Model', or None when the image does not say both."""
    manufacturer, model = _text(ds, "Manufacturer"), _text(ds, "ManufacturerModelName")
    return f"{manufacturer} {model}" if manufacturer and model else None


def _identity(ds: Dataset) -> str:
    parts = "|".join(_text(ds, k) for k in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber"))
    return hashlib.sha256(parts.encode()).hexdigest()


def _device(ds: Dataset, identity: str) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": [{"system": SYSTEM, "value": identity}],
        "status": "active",
        "manufacturer": _text(ds, "Manufacturer"),
        "deviceName": [{"name": _text(ds, "ManufacturerModelName"), "type": "model-name"}],
        "modelNumber": _text(ds, "ManufacturerModelName"),
        "type": {"text": "imaging device (from the images' DICOM General Equipment module)"},
    }
    if serial := _text(ds, "DeviceSerialNumber"):
        device["serialNumber"] = serial
    if software := _text(ds, "SoftwareVersions"):
        device["version"] = [{"value": software}]
    return device


async def imaging_device(repo: Repository, ds: Dataset) -> Stored | None:
    """The image's Device (created with the first image that names it), or None."""
    if device_label(ds) is None:
        return None
    identity = _identity(ds)
    found = await repo.find("Device", [("identifier", f"{SYSTEM}|{identity}")], 1)
    if found:
        return found[0]
    return await repo.create(_device(ds, identity), resource_type="Device", server_built=True)


def reference(device: Stored, ds: Dataset) -> dict[str, str]:
    return {"reference": f"Device/{device.resource['id']}", "display": device_label(ds) or ""}


def _is_imaging_device(resource: Content) -> bool:
    return any(isinstance(i, dict) and i.get("system") == SYSTEM for i in (resource or {}).get("identifier") or [])


def _server_written(resource: Content, before: Content) -> None:
    """An imaging Device is written by DICOM ingest only: a client's would be adopted by the next image."""
    if _is_imaging_device(resource) or _is_imaging_device(before):
        raise conflict(f"a Device with an identifier of {SYSTEM} is written by the server's DICOM ingest only")


register("Device", _server_written)
