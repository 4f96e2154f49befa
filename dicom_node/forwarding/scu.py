"""The C-STORE SCU of forwarding (PS3.4 B.2, PS3.7 9.1.1): one association per destination and batch.

Presentation contexts (PS3.8 7.1.1.13): for each SOP class, one context per compressed transfer syntax the
objects are stored in, and one offering Explicit and Implicit VR Little Endian, so a PACS that takes the
object's own encoding gets it as stored, and one that accepts only uncompressed gets it decompressed
(``dicom_node.transcoding``: never a lossy re-encoding). Warnings (0xB000, 0xB006, 0xB007) count as stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association

from dicom_node import transcoding
from dicom_node.forwarding.config import Destination
from dicom_node.reactor import ClosingAE

log = logging.getLogger(__name__)
NATIVE = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
MAX_CONTEXTS = 120  # PS3.8 9.3.2.2: at most 128 presentation contexts (odd ids 1..255) in one association
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})  # PS3.4 B.2.3: coercion, elements discarded, SOP class mismatch


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one C-STORE did: ``stored`` (success or warning), the DIMSE status when one came back."""

    job: str
    stored: bool
    status: int | None
    error: str = ""
    syntax: str = ""


def contexts_of(datasets: Sequence[Dataset]) -> list[tuple[str, list[str]]]:
    """The presentation contexts to propose: per SOP class its compressed stored syntaxes, one each, and native."""
    proposed: dict[tuple[str, str], list[str]] = {}
    for ds in datasets:
        sop_class, syntax = str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)
        if transcoding.is_encapsulated(syntax):
            proposed.setdefault((sop_class, syntax), [syntax])
        proposed.setdefault((sop_class, "native"), list(NATIVE))
    return [(sop_class, syntaxes) for (sop_class, _), syntaxes in proposed.items()]


def batches(items: Sequence[tuple[str, Dataset]]) -> list[list[tuple[str, Dataset]]]:
    """``items`` in groups whose presentation contexts fit one association."""
    groups: list[list[tuple[str, Dataset]]] = [[]]
    for item in items:
        if len(contexts_of([ds for _, ds in groups[-1]] + [item[1]])) > MAX_CONTEXTS:
            groups.append([])
        groups[-1].append(item)
    return [g for g in groups if g]


def _accepted(assoc: Association, sop_class: str) -> list[str]:
    return [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class]


def _store(assoc: Association, job: str, ds: Dataset) -> Delivery:
    sop_class = str(ds.SOPClassUID)
    accepted = _accepted(assoc, sop_class)
    if not accepted:
        return Delivery(job, False, None, f"the destination accepted no presentation context for SOP class {sop_class}")
    try:
        ds = transcoding.deliverable(ds, accepted)
        answer = assoc.send_c_store(ds)
    except transcoding.TranscodingError as exc:
        return Delivery(job, False, None, f"not sendable in a syntax the destination accepts: {exc}")
    except (ValueError, RuntimeError) as exc:  # pynetdicom: no usable context, association gone
        return Delivery(job, False, None, f"C-STORE not sent: {exc}"[:500])
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if "Status" not in answer:
        return Delivery(job, False, None, "no C-STORE response (association aborted or timed out)", syntax)
    status = int(answer.Status)
    if status == 0 or status in WARNINGS:
        return Delivery(job, True, status, "", syntax)
    comment = str(answer.get("ErrorComment", "")).strip()
    return Delivery(job, False, status, f"C-STORE failed, status 0x{status:04X}" + (f": {comment}" if comment else ""),
                    syntax)  # fmt: skip


def _refused(assoc: Association, destination: Destination) -> str:
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if assoc.is_rejected:
        return f"association rejected by {where}"
    return f"no association with {where}: unreachable, aborted, or no answer within {destination.timeout_seconds:g} s"


def _send_group(destination: Destination, calling_ae: str, group: Sequence[tuple[str, Dataset]]) -> list[Delivery]:
    ae = ClosingAE(ae_title=destination.calling_ae or calling_ae)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = destination.timeout_seconds
    ae.network_timeout = destination.timeout_seconds
    for sop_class, syntaxes in contexts_of([ds for _, ds in group]):
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        error = _refused(assoc, destination)
        return [Delivery(job, False, None, error) for job, _ in group]
    done: list[Delivery] = []
    try:
        for job, ds in group:
            done.append(_store(assoc, job, ds))
            if not assoc.is_established:
                error = f"association with {destination.ae_title} lost"
                return done + [Delivery(j, False, None, error) for j, _ in group[len(done) :]]
    finally:
        if assoc.is_established:
            assoc.release()
    return done


def send(destination: Destination, calling_ae: str, items: Sequence[tuple[str, Dataset]]) -> list[Delivery]:
    """C-STORE ``items`` (job key, dataset) to ``destination``; one ``Delivery`` per item. Blocking: run it in
    a thread. Every timeout is the destination's ``timeoutSeconds``, so an unreachable PACS costs that, once."""
    return [delivery for group in batches(items) for delivery in _send_group(destination, calling_ae, group)]
