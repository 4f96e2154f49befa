"""WADO-RS content negotiation: the media type and transfer syntax of each part (PS3.18 8.7.3 and 8.7.4).

A media range in ``Accept`` names the part's type (``multipart/related; type="application/dicom"``) and,
optionally, a ``transfer-syntax``: ``*`` is the object as stored; none means the type's default
(PS3.18 Table 8.7.3-2, since 2016c: Explicit VR Little Endian for ``application/dicom`` and
``application/octet-stream``). The first acceptable range (by ``q``, then order) that the node can
produce for every object answered wins; none at all is 406 Not Acceptable.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import orjson
from pydicom import Dataset, dcmwrite

from dicom_node import transcoding
from dicom_node.web.multipart import media_parameters
from fhir_server.storage.port import Record

if TYPE_CHECKING:
    from dicom_node.web.service import DicomWeb

Resource = Literal["instance", "frame"]
AS_STORED = "*"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}  # fmt: skip
_DEFAULT_SYNTAX = {  # PS3.18 Table 8.7.3-2 (frames) and 8.7.3-3 (instances): the default of each type
    DICOM: EXPLICIT_LE, OCTET_STREAM: EXPLICIT_LE, "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80", "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}  # fmt: skip
_ANY = ("*/*", "multipart/*", "multipart/related")


class NotAcceptable(transcoding.TranscodingError):
    """No acceptable media type and transfer syntax can be produced (406)."""


@dataclass(frozen=True, slots=True)
class Representation:
    part_type: str  # application/dicom, application/octet-stream, image/jpeg...
    syntax: str  # a transfer syntax UID, or AS_STORED

    def target(self, stored: str) -> str:
        """The transfer syntax of an object stored in ``stored``."""
        return stored if self.syntax == AS_STORED else self.syntax

    def frame_media(self, stored: str) -> str:
        """A frame part's Content-Type: its image type for a compressed syntax, else octet-stream."""
        syntax = self.target(stored)
        return f"{FRAME_MEDIA.get(syntax, OCTET_STREAM)}; transfer-syntax={syntax}"

    def producible(self, stored: str) -> bool:
        """Whether the node can produce this from an object stored in ``stored``: as stored, or converted to
        a syntax the node writes (``transcoding.WRITABLE``) of the part type's media."""
        if self.syntax == AS_STORED:  # any syntax: each part's Content-Type names the one it is in
            return True
        target = self.target(stored)
        if self.part_type not in (DICOM, FRAME_MEDIA.get(target, OCTET_STREAM)):
            return False
        return target == stored or target in transcoding.WRITABLE


def _ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of ``accept`` by preference (``q``, then order); those with q=0 left out."""
    ranked = []
    for position, token in enumerate(accept.split(",")[:32]):  # bounded: no client needs more
        media, params = media_parameters(token)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0 and media:
            ranked.append((-quality, position, media, params))
    return [(media, params) for _, _, media, params in sorted(ranked)]


def wanted(accept: str, resource: Resource) -> list[Representation]:
    """The representations ``accept`` asks for, best first (an absent header is ``*/*``)."""
    default_type = DICOM if resource == "instance" else OCTET_STREAM
    found = []
    for media, params in _ranges(accept or "*/*"):
        part_type = params.get("type", default_type).lower() if media in _ANY else media
        if part_type in ("*/*", "*"):
            part_type = default_type
        if (resource == "instance") != (part_type == DICOM) or part_type not in _DEFAULT_SYNTAX:
            continue
        syntax = params.get("transfer-syntax", _DEFAULT_SYNTAX[part_type])
        found.append(Representation(part_type, syntax))
    return found


def choose(accept: str, resource: Resource, stored: Iterable[str]) -> Representation:
    """The first wanted representation the node can produce for every stored syntax (PS3.18 8.7.3.5)."""
    syntaxes = set(stored)
    options = wanted(accept, resource)
    for option in options:
        if all(option.producible(syntax) for syntax in syntaxes):
            return option
    if not options:
        default_type = DICOM if resource == "instance" else OCTET_STREAM
        raise NotAcceptable(f'WADO-RS answers multipart/related; type="{default_type}"')
    asked = ", ".join(f"{o.part_type} in {o.syntax}" for o in options[:4])
    raise NotAcceptable(f"cannot produce {asked} from the stored {', '.join(sorted(syntaxes))}")


def stored_syntax(record: Record) -> str:
    """The transfer syntax an instance is stored in (its index record, ``attributes.index_instance``)."""
    return str(orjson.loads(record.body).get("transferSyntax", EXPLICIT_LE))


async def read_as(service: DicomWeb, tenant: str, record: Record, chosen: Representation) -> tuple[str, bytes]:
    """The instance's PS3.10 file in the chosen representation's syntax (as stored when it is that one)."""
    stored = stored_syntax(record)
    target = chosen.target(stored)
    if target == stored:
        return stored, await service.read_bytes(tenant, record)
    ds = await service.read_dataset(tenant, record)
    return target, await asyncio.to_thread(_encoded, ds, target)


def _encoded(ds: Dataset, target: str) -> bytes:
    transcoding.transcoded(ds, target)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
