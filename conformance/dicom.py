"""The DICOM conformance statement (PS3.2 Annex A), generated from what the node registers:
its SOP classes, transfer syntaxes, query keys and configured behaviour. Never typed by hand."""

from __future__ import annotations

from pydicom.uid import UID

from dicom_node.admission import ASSOCIATE_RQ_MAX_BYTES
from dicom_node.attributes import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS
from dicom_node.dimse import QR_FIND, QR_GET, QR_MOVE, DimseConfig
from dicom_node.sop_classes import AI_RESULT_CLASSES, STORAGE_CLASSES, TRANSFER_SYNTAXES


def _uid_rows(uids: list[UID] | tuple[UID, ...], names: dict[UID, str] | None = None) -> list[str]:
    return [f"| {(names or {}).get(uid) or uid.name} | {uid} |" for uid in uids]


def _destinations(config: DimseConfig) -> str:
    named = [f"`{d.ae_title}` ({d.host}:{d.port})" for d in config.move_destinations.values()]
    return ", ".join(named) or "none configured"


def dicom_conformance(config: DimseConfig, duplicates: str, dicomweb: bool = True) -> str:
    """Markdown, for hospital IT."""
    limits = config.limits
    lines = [
        "# DermBridge DICOM Conformance Statement",
        "",
        "## 1. Application entity",
        "",
        f"- AE title: `{config.ae_title}`; DIMSE on {config.host}:{config.port}"
        + (f"; DICOM TLS on port {config.tls_port}" if config.tls_port else "; DICOM TLS: not configured"),
        "- Association acceptor only (and requestor for C-MOVE sub-operations to configured destinations).",
        "- Calling AE titles are mapped to tenants by configuration; an unmapped caller is rejected at association"
        " (A-ASSOCIATE-RJ, reason: calling AE title not recognised)"
        + (f", except that tenant `{config.any_ae_tenant}` takes any caller." if config.any_ae_tenant else "."),
        "- Each calling AE may use only the DIMSE services of its roles (echo, store, find, get, move) and, where"
        " configured, only from listed addresses (else A-ASSOCIATE-RJ, calling AE title not recognised). Presentation"
        " contexts of other services are rejected at association (result 3, abstract syntax not supported); storage"
        " contexts stay offered to an AE that may C-GET, and a C-STORE on them from an AE that may not store is"
        " answered 0124 (Refused: Not authorized) with an ErrorComment. (The AE titles themselves are not listed"
        " here: on DIMSE they are the callers' credentials.)",
        f"- TCP_NODELAY is set on accepted connections; maximum PDU received: {limits.max_pdu} bytes (longer PDUs:"
        f" A-ABORT at the header; an A-ASSOCIATE-RQ over {ASSOCIATE_RQ_MAX_BYTES} bytes: A-ASSOCIATE-RJ).",
        f"- Associations: at most {limits.max_associations} open, {limits.per_peer} per peer address, and"
        f" {limits.reserved} more reserved for calling AE titles mapped to a tenant; beyond: A-ASSOCIATE-RJ"
        " (rejected-transient, service-provider presentation, local-limit-exceeded).",
        f"- ARTIM: {limits.artim_s:g} s from connection to a whole A-ASSOCIATE-RQ; a PDU must arrive whole within"
        f" {limits.read_timeout_s:g} s of its first byte; an association idle for 120 s is aborted.",
        "",
        "## 2. Verification (SCP)",
        "",
        "| SOP class | UID |",
        "|---|---|",
        "| Verification | 1.2.840.10008.1.1 |",
        "",
        "## 3. Storage (SCP)",
        "",
        "| SOP class | UID |",
        "|---|---|",
        *_uid_rows(list(STORAGE_CLASSES), dict(STORAGE_CLASSES)),
        "",
        "Transfer syntaxes accepted for every storage SOP class, in the order the requestor proposes them"
        " (at equal rank: as listed); objects are stored exactly as received, and decompressed for a C-GET"
        " or C-MOVE peer that accepts only uncompressed syntaxes:",
        "",
        "| Transfer syntax | UID |",
        "|---|---|",
        *_uid_rows(TRANSFER_SYNTAXES),
        "",
        "- Level of support: level 2 (full): every attribute is kept.",
        "- Success (0000) is answered only after the object is on disk (fsync) and indexed, and the FHIR"
        " Patient, ImagingStudy, Media and case DiagnosticReport are committed with it.",
        "- Each instance is checked for its IOD's identifying and Image Pixel attributes; failures:"
        " A900 (data set does not match SOP class) with an ErrorComment naming the attribute, C000"
        " (cannot understand) for undecodable data, A700 (out of resources) if it cannot be stored.",
        f"- Duplicate SOP Instance UID: **{duplicates}** "
        + ("(the first object is kept; the duplicate is answered Success and not stored)."
           if duplicates == "keep" else "(the new object replaces the stored one)."),
        "",
        "## 4. Query/Retrieve (SCP)",
        "",
        "| SOP class | UID |",
        "|---|---|",
        *_uid_rows(list(QR_FIND) + list(QR_GET) + list(QR_MOVE)),
        "",
        "- Levels: PATIENT, STUDY, SERIES, IMAGE; hierarchical queries (the unique keys of the levels above).",
        "- Matching: single value (PN and descriptions case-insensitive; PN matches a name's start),"
        " wildcard `*` and `?`, range for DA/TM/DT (`a-b`, `a-`, `-b`), list of UIDs, universal.",
        f"- STUDY keys: {', '.join(STUDY_KEYS)}, ModalitiesInStudy, NumberOfStudyRelatedSeries,"
        " NumberOfStudyRelatedInstances.",
        f"- SERIES keys: {', '.join(SERIES_KEYS)}, NumberOfSeriesRelatedInstances.",
        f"- IMAGE keys: {', '.join(INSTANCE_KEYS)}.",
        f"- C-MOVE destinations: {_destinations(config)}. Unknown destinations: A801.",
        "- C-FIND responses carry Specific Character Set (0008,0005): the query's when it can encode every"
        " value of the response, else ISO_IR 192 (UTF-8), also when the query names none.",
        "- Also retrieved (C-GET, C-MOVE, WADO-RS) and found (C-FIND, QIDO-RS), never accepted from a peer"
        " (C-STORE: A900 \"SOP class not supported\"): the server's own AI results, created in the study of"
        " the analysed image as new series (IHE AI Results), in Explicit/Implicit VR Little Endian:",
        "",
        "| SOP class | UID |",
        "|---|---|",
        *_uid_rows(list(AI_RESULT_CLASSES), dict(AI_RESULT_CLASSES)),
        "",
        "",
    ]  # fmt: skip
    if dicomweb:
        lines += [
            "## 5. DICOMweb (PS3.18)",
            "",
            "Base `/dicomweb/{tenant}`: STOW-RS (`POST /studies[/{study}]`, multipart/related application/dicom),"
            " QIDO-RS (`/studies`, `/series`, `/instances` and their nested forms; `limit`, `offset`),"
            " WADO-RS (study, series, instance as multipart/related application/dicom; `metadata`;"
            " `frames/{n}`; `rendered` (instance and series) and `thumbnail` as image/jpeg or image/png);"
            " WADO-URI (`/wado?requestType=WADO`, PS3.18 chapter 9); HEAD on QIDO/WADO; DELETE of studies,"
            " series and instances.",
            "",
        ]
    return "\n".join(lines)
