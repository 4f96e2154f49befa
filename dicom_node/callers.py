"""Who may call the node, from where, and for which DIMSE services: the per-AE roles.

A calling AE title is the only credential on DIMSE (PS3.8 §7.1.1.4), so each mapped AE names the
tenant it works for, the services it may use (as Orthanc's ``DicomModalities`` ``AllowEcho``,
``AllowStore``, ``AllowFind``, ``AllowGet``, ``AllowMove`` do) and, optionally, the addresses it
must call from. The node applies a caller's roles in two places, both decided here:

- at association (PS3.8 §9.3.3.2): presentation contexts of services it may not use are rejected
  (result 3, abstract syntax not supported), so the SCU learns at once; storage contexts are kept
  for an AE that may C-GET, since its C-GET sub-operations are C-STOREs on them (PS3.4 C.4.3.3);
- on such a kept storage context, a C-STORE from an AE without ``store`` is answered
  0124 "Refused: Not authorized" (a general status, PS3.7 Annex C) with an ErrorComment.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork
from pydicom.uid import UID
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.sop_classes import QR_FIND, QR_GET, QR_MOVE, RETRIEVABLE_CLASSES
from dicom_node.storage_commitment import STORAGE_COMMITMENT

Service = Literal["echo", "store", "find", "get", "move"]
SERVICES: tuple[Service, ...] = ("echo", "store", "find", "get", "move")
DIMSE_NAMES: dict[Service, str] = {"echo": "C-ECHO", "store": "C-STORE", "find": "C-FIND", "get": "C-GET",
                                   "move": "C-MOVE"}  # fmt: skip
_SERVICE_OF: dict[str, Service] = {
    str(Verification): "echo",
    **{str(uid): "store" for uid in RETRIEVABLE_CLASSES},  # the AI results' classes: C-GET answers arrive on them
    STORAGE_COMMITMENT: "store",  # a device that may store may ask whether the node keeps what it sent
    **{str(uid): "find" for uid in QR_FIND},
    **{str(uid): "get" for uid in QR_GET},
    **{str(uid): "move" for uid in QR_MOVE},
}


class DicomCaller(BaseModel):
    """A calling AE's entry: ``{"tenant": "default", "roles": ["echo", "store"], "hosts": ["10.0.0.0/24"]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1, max_length=64)
    roles: frozenset[Service] = Field(description="the DIMSE services it may use: echo, store, find, get, move")
    hosts: tuple[IPvAnyNetwork, ...] = Field(
        default=(), max_length=256, description="addresses or networks (CIDR) it must call from; empty: any"
    )

    def calls_from(self, address: str) -> bool:
        """Whether a peer at ``address`` may use this AE title (any, when no hosts are configured)."""
        if not self.hosts:
            return True
        try:
            peer: IPv4Address | IPv6Address = ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(peer, IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        return any(peer in network for network in self.hosts)

    def describe(self) -> str:
        roles = ", ".join(s for s in SERVICES if s in self.roles) or "none"
        hosts = f" from {', '.join(str(h) for h in self.hosts)}" if self.hosts else ""
        return f"{self.tenant} ({roles}){hosts}"


def service_of(abstract_syntax: str | UID) -> Service | None:
    """The DIMSE service a presentation context's abstract syntax is for (None: not one the node offers)."""
    return _SERVICE_OF.get(str(abstract_syntax))


def context_services(roles: Iterable[Service]) -> frozenset[Service]:
    """The services whose presentation contexts a caller with ``roles`` is offered: storage also for C-GET."""
    offered = frozenset(roles)
    return offered | {"store"} if "get" in offered else offered


def withheld(caller: DicomCaller, abstract_syntaxes: Iterable[str | UID]) -> list[Service]:
    """The services a caller proposed contexts for that its roles refuse, in the order of ``SERVICES``."""
    proposed = {service_of(syntax) for syntax in abstract_syntaxes}
    offered = context_services(caller.roles)
    return [service for service in SERVICES if service in proposed and service not in offered]


class Callers:
    """The configured calling AEs; an entry in the plain form ``"AE": "tenant"`` has ``default_roles``,
    as has any other AE when ``any_ae_tenant`` is set; a ``refused`` title (listed by several tenants) has none."""

    def __init__(
        self, mapping: dict[str, str | DicomCaller], default_roles: Iterable[Service] = SERVICES,
        any_ae_tenant: str | None = None, refused: Iterable[str] = (),
    ) -> None:  # fmt: skip
        roles = frozenset(default_roles)
        self.by_ae: dict[str, DicomCaller] = {
            ae.strip(): entry if isinstance(entry, DicomCaller) else DicomCaller(tenant=entry, roles=roles)
            for ae, entry in mapping.items()
        }
        self.anyone = DicomCaller(tenant=any_ae_tenant, roles=roles) if any_ae_tenant is not None else None
        self.refused = frozenset(ae.strip() for ae in refused)

    def named(self, calling_ae: str) -> DicomCaller | None:
        """The entry the AE title names (or the any-AE one), wherever it calls from."""
        title = calling_ae.strip()
        return None if title in self.refused else self.by_ae.get(title, self.anyone)

    def admit(self, calling_ae: str, address: str) -> DicomCaller | None:
        """The caller's entry if it may associate from ``address``; None: reject the association."""
        caller = self.named(calling_ae)
        return caller if caller is not None and caller.calls_from(address) else None
