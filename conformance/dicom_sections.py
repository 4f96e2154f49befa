"""The SOP-specific, configuration, character-set and security sections of the DICOM conformance statement
(PS3.2 A.2.2.1.4 SOP specific conformance, A.2.4 Configuration, A.5 Support of Character Sets, A.6 Security),
each generated from the node's registries and configuration."""

from __future__ import annotations

import ssl
from collections import Counter

from pydicom import charset
from pynetdicom import AE

from dicom_node.attributes import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS
from dicom_node.callers import SERVICES
from dicom_node.charsets import UTF8
from dicom_node.dimse import DimseConfig


def storage(duplicates: str) -> list[str]:
    """SOP specific conformance of the Storage SOP classes (PS3.4 B.4.2 levels of support)."""
    kept = "(the first object is kept; the duplicate is answered Success and not stored)."
    return [
        "###### SOP specific conformance: Storage SCP",
        "",
        "- Level of support: level 2 (full): every attribute is kept; objects are stored exactly as received.",
        "- Success (0000) is answered only after the object is on disk (fsync) and indexed, and the FHIR"
        " Patient, ImagingStudy, Media and case DiagnosticReport are committed with it.",
        "- Each instance is checked for its IOD's identifying and Image Pixel attributes; failures:"
        " A900 (data set does not match SOP class) with an ErrorComment naming the attribute, C000"
        " (cannot understand) for undecodable data, A700 (out of resources) if it cannot be stored.",
        "- The AI result classes (SR, SEG) are the node's own objects: a C-STORE of one is answered A900.",
        f"- Duplicate SOP Instance UID: **{duplicates}** "
        + (kept if duplicates == "keep" else "(the new object replaces the stored one)."),
        "- A C-STORE from a caller without the store role, on a storage context kept for its C-GET, is answered"
        " 0124 (Refused: Not authorized) with an ErrorComment.",
        "",
    ]


def query_retrieve() -> list[str]:
    """SOP specific conformance of the Query/Retrieve SOP classes (PS3.4 C.4)."""
    return [
        "###### SOP specific conformance: Query/Retrieve SCP",
        "",
        "- Levels: PATIENT, STUDY, SERIES, IMAGE; hierarchical queries (the unique keys of the levels above).",
        "- Matching: single value (PN and descriptions case-insensitive; PN matches a name's start),"
        " wildcard `*` and `?`, range for DA/TM/DT (`a-b`, `a-`, `-b`), list of UIDs, universal.",
        f"- STUDY keys: {', '.join(STUDY_KEYS)}, ModalitiesInStudy, NumberOfStudyRelatedSeries,"
        " NumberOfStudyRelatedInstances.",
        f"- SERIES keys: {', '.join(SERIES_KEYS)}, NumberOfSeriesRelatedInstances.",
        f"- IMAGE keys: {', '.join(INSTANCE_KEYS)}.",
        "- C-FIND, C-GET and C-MOVE answer C-CANCEL between responses (FE00). An identifier the node cannot"
        " process: A900 with an ErrorComment.",
        "",
    ]


def _callers(config: DimseConfig) -> str:
    """The mapped callers by roles and address restriction, without their AE titles (DIMSE credentials)."""
    kinds = Counter(
        ", ".join(s for s in SERVICES if s in caller.roles) + (", from listed addresses only" if caller.hosts else "")
        for caller in config.callers.by_ae.values()
    )
    counted = "; ".join(f"{n} with {kind}" for kind, n in sorted(kinds.items())) or "none"
    anyone = (
        f"any other calling AE is taken for tenant `{config.any_ae_tenant}` with"
        f" {', '.join(s for s in SERVICES if s in config.default_roles)}"
        if config.any_ae_tenant
        else "any other calling AE is rejected (A-ASSOCIATE-RJ, calling AE title not recognised)"
    )
    return f"{len(config.callers.by_ae)} calling AE title(s) mapped to tenants ({counted}); {anyone}."


def configuration(ae: AE, config: DimseConfig) -> list[str]:
    """A.2.3 Network interfaces and A.2.4 Configuration: the settings that change this statement."""
    limits = config.limits
    rows = [
        ("DERMBRIDGE_DICOM_AE_TITLE", f"`{ae.ae_title}`"),
        ("DERMBRIDGE_DICOM_HOST", config.host),
        ("DERMBRIDGE_DICOM_PORT", str(config.port)),
        ("DERMBRIDGE_DICOM_TLS_PORT", str(config.tls_port) if config.tls_port else "not set (no DICOM TLS)"),
        ("DERMBRIDGE_DICOM_DEFAULT_ROLES", ", ".join(s for s in SERVICES if s in config.default_roles)),
        ("DERMBRIDGE_DICOM_MAX_ASSOCIATIONS", str(limits.max_associations)),
        ("DERMBRIDGE_DICOM_MAX_ASSOCIATIONS_PER_PEER", str(limits.per_peer)),
        ("DERMBRIDGE_DICOM_RESERVED_ASSOCIATIONS", str(limits.reserved)),
        ("DERMBRIDGE_DICOM_ARTIM_TIMEOUT_SECONDS", f"{limits.artim_s:g}"),
        ("DERMBRIDGE_DICOM_PDU_READ_TIMEOUT_SECONDS", f"{limits.read_timeout_s:g}"),
        ("DERMBRIDGE_DICOM_MAX_PDU_BYTES", str(limits.max_pdu)),
    ]
    return [
        "### 1.3 Network interfaces",
        "",
        "TCP/IP (PS3.8), IPv4 and IPv6, on the address the configuration names; the physical interface is the host's.",
        "",
        "### 1.4 Configuration",
        "",
        f"- Local AE title: `{ae.ae_title}`, listening on {config.host}:{config.port}"
        + (f" and, with DICOM TLS, on port {config.tls_port}." if config.tls_port else "."),
        "- Remote AE titles (callers): " + _callers(config),
        "- Each calling AE may use only the DIMSE services of its roles (echo, store, find, get, move) and, where"
        " configured, only from listed addresses (else A-ASSOCIATE-RJ, calling AE title not recognised). Presentation"
        " contexts of other services are rejected at association (result 3, abstract syntax not supported); storage"
        " contexts stay offered to an AE that may C-GET. (The AE titles themselves are not listed here: on DIMSE"
        " they are the callers' credentials.)",
        "",
        "| Setting | Value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Callers (`DERMBRIDGE_DICOM_AE_TENANTS`, `DERMBRIDGE_DICOM_ANY_AE_TENANT`) and C-MOVE destinations"
        " (`DERMBRIDGE_DICOM_MOVE_DESTINATIONS`) are configured likewise.",
        "",
    ]


def character_sets() -> list[str]:
    """A.5: what the node stores, indexes and answers in (PS3.5 §6.1)."""
    terms = ", ".join(sorted(term for term in charset.python_encoding if term))
    return [
        "## 3. Support of character sets",
        "",
        f"- Stored and indexed: every Specific Character Set (0008,0005) pydicom decodes: {terms}; none: the"
        " default repertoire. Objects are stored as received.",
        "- C-FIND responses carry Specific Character Set (0008,0005): the query's when it can encode every"
        f" value of the response, else {UTF8} (UTF-8), also when the query names none.",
        "",
    ]


def _tls(context: ssl.SSLContext) -> str:
    minimum = context.minimum_version.name.replace("v", " ").replace("_", ".")
    clients = (
        "client certificates required and verified against the configured CA"
        if context.verify_mode == ssl.CERT_REQUIRED
        else "no client certificate requested"
    )
    return f"{minimum} or later, the cipher suites of the host's OpenSSL defaults; {clients}"


def security(config: DimseConfig) -> list[str]:
    """A.6: security profiles and association-level security."""
    tls = (
        f"DICOM TLS on port {config.tls_port}: {_tls(config.tls)}. The node claims no named PS3.15 Annex B"
        " profile beyond these parameters."
        if config.tls is not None and config.tls_port is not None
        else "DICOM TLS: not configured (set DERMBRIDGE_DICOM_TLS_PORT, _CERTIFICATE and _PRIVATE_KEY)."
    )
    return [
        "## 4. Security",
        "",
        f"- {tls}",
        "- Association level: the calling AE title must be mapped to a tenant and, where configured, call from a"
        " listed address or network; each AE's roles restrict its DIMSE services (section 1.4).",
        "- Application level: every association and operation is recorded as a FHIR AuditEvent (DICOM audit"
        " message codes) in the tenant's hash-chained audit trail; objects are encrypted at rest with the"
        " patient's data key.",
        "",
    ]


def dicomweb() -> list[str]:
    """Not part of PS3.2 Annex A's DIMSE sections: the node's PS3.18 services, for completeness."""
    return [
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
