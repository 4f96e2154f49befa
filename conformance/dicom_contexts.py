"""The presentation-context tables of the DICOM conformance statement (PS3.2 A.2.2.1.3, A.2.2.1.4), read
from the node's own AE: the contexts it accepts and those it proposes on C-MOVE sub-associations."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.presentation import PresentationContext

from dicom_node.callers import service_of
from dicom_node.sop_classes import AI_RESULT_CLASSES, RETRIEVABLE_CLASSES
from dicom_node.storage_commitment import STORAGE_COMMITMENT

ROLES = {
    "echo": "SCP",
    "store": "SCP; SCU on C-GET associations (SCP/SCU role selection)",
    "find": "SCP",
    "get": "SCP",
    "move": "SCP",
}
AI_RESULT_ROLE = "SCU on C-GET associations only (C-STORE refused)"
COMMITMENT_ROLE = "SCP (N-EVENT-REPORT on the same or a new association)"


def sop_name(uid: str) -> str:
    """The SOP class's name as the node lists it, else as pydicom's dictionary names it."""
    return RETRIEVABLE_CLASSES.get(UID(uid)) or UID(uid).name


def transfer_syntax_sets(contexts: Iterable[PresentationContext]) -> dict[tuple[str, ...], str]:
    """Each distinct list of transfer syntaxes, labelled TS-1, TS-2, ... in the order first met."""
    sets: dict[tuple[str, ...], str] = {}
    for context in contexts:
        syntaxes = tuple(str(ts) for ts in context.transfer_syntax)
        sets.setdefault(syntaxes, f"TS-{len(sets) + 1}")
    return sets


def syntax_tables(sets: dict[tuple[str, ...], str]) -> list[str]:
    """One table per labelled set: the transfer syntaxes' names and UIDs, in order of preference."""
    lines: list[str] = []
    for syntaxes, label in sets.items():
        lines += [f"Transfer syntax set {label}:", "", "| Transfer syntax | UID |", "|---|---|"]
        lines += [f"| {UID(ts).name} | {ts} |" for ts in syntaxes] + [""]
    return lines


def commitment(abstract_syntax: str) -> bool:
    return UID(abstract_syntax) == STORAGE_COMMITMENT


def _acceptor_role(abstract_syntax: str) -> str:
    if UID(abstract_syntax) in AI_RESULT_CLASSES:
        return AI_RESULT_ROLE
    if commitment(abstract_syntax):
        return COMMITMENT_ROLE
    service = service_of(abstract_syntax)
    return ROLES[service] if service is not None else "SCP"


def accepted_contexts(ae: AE) -> list[str]:
    """PS3.2 Table A.2.2-x "Acceptable Presentation Contexts": one row per abstract syntax."""
    sets = transfer_syntax_sets(ae.supported_contexts)
    rows = [
        f"| {sop_name(str(cx.abstract_syntax))} | {cx.abstract_syntax} |"
        f" {sets[tuple(str(ts) for ts in cx.transfer_syntax)]} | {_acceptor_role(str(cx.abstract_syntax))} |"
        f" {'SCP/SCU role selection' if cx.scp_role or cx.scu_role else 'None'} |"
        for cx in ae.supported_contexts
    ]
    header = ["| Abstract syntax | UID | Transfer syntaxes | Role | Extended negotiation |", "|---|---|---|---|---|"]
    return [*header, *rows, "", *syntax_tables(sets)]


def proposed_contexts(ae: AE) -> list[str]:
    """PS3.2 Table A.2.2-x "Proposed Presentation Contexts": the contexts of a C-MOVE sub-association.
    The node proposes one context per transfer syntax, so that each object goes as it was stored."""
    by_class: dict[str, list[str]] = {}
    for cx in ae.requested_contexts:
        by_class.setdefault(str(cx.abstract_syntax), []).extend(str(ts) for ts in cx.transfer_syntax)
    sets: dict[tuple[str, ...], str] = {}
    for syntaxes in by_class.values():
        sets.setdefault(tuple(syntaxes), f"TS-M{len(sets) + 1}")
    rows = [
        f"| {sop_name(uid)} | {uid} | {sets[tuple(syntaxes)]}, one context per syntax | SCU | None |"
        for uid, syntaxes in by_class.items()
    ]
    header = ["| Abstract syntax | UID | Transfer syntaxes | Role | Extended negotiation |", "|---|---|---|---|---|"]
    return [*header, *rows, "", *syntax_tables(sets)]
