"""The node's DICOM peers as they stand now: the calling AEs (``callers.Callers``) and the C-MOVE destinations
of every tenant, read from the tenants' databases (``fhir_server.dicom_peers``) when an association is
requested, so that a change an administrator makes is applied to the next association by every DIMSE
process serving the tenant, without a restart (the database is the one copy; no process keeps its own).

``DICOM_ANY_AE_TENANT`` stays a setting of the process; the environment's per-AE entries and destinations
seed a tenant's entries once, on the first start that finds the tenant without any (``seed``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dicom_node.callers import Callers, DicomCaller, Service
from fhir_server import dicom_peers
from fhir_server.storage.port import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MoveDestination:
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Peers:
    """One reading of every tenant's peers."""

    callers: Callers
    destinations: dict[str, dict[str, MoveDestination]] = field(default_factory=dict)  # tenant -> AE -> where

    def destination(self, tenant: str | None, ae_title: str) -> MoveDestination | None:
        return self.destinations.get(tenant or "", {}).get(ae_title.strip())


def from_settings(
    mapping: dict[str, str | DicomCaller], default_roles: Iterable[Service], any_ae_tenant: str | None,
    destinations: dict[str, MoveDestination], default_tenant: str,
) -> Peers:  # fmt: skip
    """The environment's peers (before the databases were read, and for a node without them)."""
    callers = Callers(mapping, default_roles, any_ae_tenant)
    tenants = {c.tenant for c in callers.by_ae.values()} | {default_tenant} | ({any_ae_tenant} - {None})
    return Peers(callers, {str(t): dict(destinations) for t in tenants})


def stored_form(peers: Peers, tenant: str) -> dict[str, Any]:
    """A tenant's share of the environment's peers, as ``fhir_server.dicom_peers`` stores it."""
    callers = {
        ae: {"services": sorted(c.roles, key=list(dicom_peers.SERVICES).index), "hosts": [str(h) for h in c.hosts]}
        for ae, c in peers.callers.by_ae.items()
        if c.tenant == tenant
    }
    moved = {ae: {"host": d.host, "port": d.port} for ae, d in peers.destinations.get(tenant, {}).items()}
    return {"callers": callers, "destinations": moved}


async def seed(engine: Engine, initial: Peers) -> None:
    """Give each tenant without stored peers its share of the environment's (the first start after an upgrade)."""
    for tenant in await engine.tenant_names():
        if await dicom_peers.seed(await engine.tenant(tenant), stored_form(initial, tenant)):
            log.info("DICOM peers of tenant %s seeded from the environment settings", tenant)


async def load(engine: Engine, initial: Peers, default_roles: Iterable[Service], any_ae_tenant: str | None) -> Peers:
    """Every tenant's peers as stored now; a tenant with none stored yet (created since the start) has its share
    of ``initial`` (the environment's). A calling AE title listed by more than one tenant is refused for all of
    them (logged: never routed to one of them), and a tenant whose stored entries cannot be read is skipped
    (logged) so that one tenant's data never stops the others' peers."""
    listed: dict[str, list[DicomCaller]] = {}
    destinations: dict[str, dict[str, MoveDestination]] = {}
    for tenant in sorted(await engine.tenant_names()):
        store = await engine.tenant(tenant)
        stored = await dicom_peers.read(store) if await dicom_peers.is_set(store) else stored_form(initial, tenant)
        try:
            callers = {ae: DicomCaller(tenant=tenant, roles=frozenset(entry.get("services") or ()),
                                       hosts=tuple(entry.get("hosts") or ()))
                       for ae, entry in (stored.get("callers") or {}).items()}  # fmt: skip
            destinations[tenant] = {
                ae: MoveDestination(ae, str(d["host"]), int(d["port"]))
                for ae, d in (stored.get("destinations") or {}).items()
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            log.exception("the DICOM peers of tenant %s are not valid; none of them apply", tenant)
            continue
        for ae, caller in callers.items():
            listed.setdefault(ae, []).append(caller)
    mapping: dict[str, str | DicomCaller] = {ae: claims[0] for ae, claims in listed.items() if len(claims) == 1}
    refused = [ae for ae, claims in listed.items() if len(claims) > 1]
    for ae in refused:  # also not the any-AE tenant's: a contested title is no one's
        log.error("the calling AE title %s is listed by tenants %s; it is refused for all of them", ae,
                  ", ".join(c.tenant for c in listed[ae]))  # fmt: skip
    return Peers(Callers(mapping, default_roles, any_ae_tenant, refused), destinations)
