"""Transfer syntaxes in and out of the node: which proposed syntax an association accepts, and
decompressing a stored object for a peer that cannot take its encoding.

The node stores objects as received (``sop_classes.TRANSFER_SYNTAXES``). Out of the node it only
ever decompresses (to Explicit VR Little Endian, PS3.5 A.2): no loss is added, so what a reader sees
is what the modality sent. Decoding uses pydicom's pixel data handlers with the codecs installed
(pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls; RLE natively).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicom_node.errors import DicomNodeError

NATIVE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
# What the node writes from any object it can decode: native, or re-encoded losslessly with pydicom's
# encoders (RLE natively, JPEG-LS with pyjpegls, JPEG 2000 with pylibjpeg-openjpeg). Never a lossy one.
LOSSLESS_ENCODINGS = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless})
LOSSY_METHODS = {  # PS3.3 C.7.6.1.1.5.1: the method of a lossy transfer syntax
    UID("1.2.840.10008.1.2.4.50"): "ISO_10918_1",
    UID("1.2.840.10008.1.2.4.51"): "ISO_10918_1",
    UID("1.2.840.10008.1.2.4.81"): "ISO_14495_1",
    UID("1.2.840.10008.1.2.4.91"): "ISO_15444_1",
}
WRITABLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian}) | LOSSLESS_ENCODINGS


class TranscodingError(DicomNodeError):
    """The object cannot be delivered in the requested transfer syntax."""


def preference(supported: Sequence[UID], proposals: Iterable[Sequence[str]]) -> list[UID]:
    """The node's ``supported`` syntaxes in the order the requestor proposed them (PS3.8 §9.3.2.2: the
    acceptor picks one of the syntaxes proposed in a context; pynetdicom takes the first of its own list
    that was proposed). A requestor lists first what it holds, so following it avoids a conversion;
    syntaxes proposed at the same rank keep the node's order, compressed first (``TRANSFER_SYNTAXES``)."""
    rank: dict[str, int] = {}
    for proposal in proposals:
        for position, syntax in enumerate(proposal):
            rank[syntax] = min(rank.get(syntax, position), position)
    never = len(rank) + 1
    return sorted(supported, key=lambda syntax: rank.get(syntax, never))


def is_encapsulated(syntax: str) -> bool:
    """Whether Pixel Data is encapsulated (compressed) in ``syntax``; Deflated is native once inflated."""
    return UID(syntax).is_compressed


def decompressed(ds: Dataset) -> Dataset:
    """``ds`` in Explicit VR Little Endian with native Pixel Data (PS3.5 A.2, 8.1.1), decoded in place.
    A dataset already native is returned as it is."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if not is_encapsulated(syntax):
        return ds
    if "PixelData" not in ds:
        raise TranscodingError(f"no Pixel Data to decode in {syntax.name}")
    try:
        ds.decompress(generate_instance_uid=False)  # the same instance, another encoding (PS3.5 10)
    except Exception as exc:  # the codec's own errors: no plugin, corrupt stream, unsupported parameters
        raise TranscodingError(f"cannot decode {syntax.name}: {type(exc).__name__}") from exc
    if syntax in LOSSY_METHODS:  # PS3.3 C.7.6.1.1.5: an image once lossy compressed stays marked as such
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = LOSSY_METHODS[syntax]
    return ds


def transcoded(ds: Dataset, target: str) -> Dataset:
    """``ds`` in the ``target`` transfer syntax (one of ``WRITABLE``, or the syntax it is stored in),
    converted in place; pydicom writes the native syntaxes from ``file_meta.TransferSyntaxUID``."""
    target = UID(target)
    if target == ds.file_meta.TransferSyntaxUID:
        return ds
    if target not in WRITABLE:
        raise TranscodingError(f"the node does not encode {target.name}")
    decompressed(ds)
    if target in LOSSLESS_ENCODINGS:
        try:
            ds.compress(target, generate_instance_uid=False)
        except Exception as exc:  # the encoder's own errors: no plugin, unsupported bit depth or colour space
            raise TranscodingError(f"cannot encode {target.name}: {type(exc).__name__}") from exc
    else:
        ds.file_meta.TransferSyntaxUID = target
    return ds


def deliverable(ds: Dataset, accepted: Iterable[str]) -> Dataset:
    """``ds`` in a syntax among ``accepted`` (a peer's accepted contexts for its SOP class): as stored when
    accepted, or any native syntax is (pynetdicom converts between them), else decompressed when a native
    syntax is accepted. Otherwise as stored: the C-STORE sub-operation then fails, counted as such."""
    accepted = {UID(syntax) for syntax in accepted}
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax in accepted or not is_encapsulated(syntax) or not accepted & NATIVE_SYNTAXES:
        return ds
    return decompressed(ds)
