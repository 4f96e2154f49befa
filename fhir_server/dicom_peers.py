"""A tenant's DICOM peers, kept in its database (``tenant_settings``) so that a change made on the admin page is
seen by every DIMSE listener serving the tenant on its next association, without a restart:

- the calling AE titles that work for the tenant, each with the DIMSE services it may use (as Orthanc's
  ``DicomModalities`` ``AllowEcho``/``AllowStore``/...) and optionally the addresses it must call from;
- the C-MOVE destinations (PS3.4 C.4.2.1.4.1 Move Destination: an AE title the node resolves to an address).

On first start each tenant's entries are seeded from the environment settings (``DICOM_AE_TENANTS``,
``DICOM_MOVE_DESTINATIONS``); from then on the database holds them. Stored as plain JSON::

    {"callers": {"MODALITY1": {"services": ["echo", "store"], "hosts": ["10.0.0.0/24"]}},
     "destinations": {"PACS": {"host": "10.0.0.5", "port": 104}}}
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fhir_server.storage.port import Engine, TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting, write_setting_in

SETTING = "dicom.peers"
SERVICES = ("echo", "store", "find", "get", "move")
MAX_PEERS = 256  # callers, and destinations, per tenant
MAX_HOSTS = 32
MAX_HOST = 253  # a DNS name's length (RFC 1035 section 2.3.4)


class PeerError(ValueError):
    """A change that cannot be made (the page says why)."""


def empty() -> dict[str, Any]:
    return {"callers": {}, "destinations": {}}


async def read(reader: TenantReader) -> dict[str, Any]:
    """The tenant's peers (empty when never set)."""
    found = await read_setting(reader, SETTING)
    return found if isinstance(found, dict) else empty()


async def is_set(reader: TenantReader) -> bool:
    return await read_setting(reader, SETTING) is not None


async def seed(store: TenantStore, peers: dict[str, Any]) -> bool:
    """Store ``peers`` unless the tenant has its own already (first start); whether it was stored."""
    if await is_set(store):
        return False
    await write_setting(store, SETTING, peers)
    return True


def ae_title(value: str) -> str:
    """An AE title (PS3.5 6.2 AE: 1 to 16 characters of the default repertoire, no backslash or control
    character, leading and trailing spaces not significant)."""
    title = value.strip()
    if not 1 <= len(title) <= 16 or any(not (" " <= c <= "~") or c == "\\" for c in title):
        raise PeerError(f"{title[:20]!r} is not an AE title (1 to 16 characters, no backslash)")
    return title


def caller_entry(services: list[str], hosts: str) -> dict[str, Any]:
    """A calling AE's entry from the form's checkboxes and its list of addresses or networks (CIDR)."""
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise PeerError(f"unknown DIMSE service {unknown[0][:20]!r}")
    networks = [h for h in hosts.replace(",", " ").split() if h]
    if len(networks) > MAX_HOSTS:
        raise PeerError(f"at most {MAX_HOSTS} addresses or networks")
    normalised = []
    for network in networks:
        try:  # stored as the network (10.2.0.7/24 -> 10.2.0.0/24): the listener's parser is strict
            normalised.append(str(ipaddress.ip_network(network, strict=False)))
        except ValueError as error:
            raise PeerError(f"{network[:50]!r} is not an address or network (CIDR)") from error
    return {"services": [s for s in SERVICES if s in services], "hosts": normalised}


def destination_entry(host: str, port: str) -> dict[str, Any]:
    host = host.strip()
    if not 1 <= len(host) <= MAX_HOST or any(c.isspace() or c in "/\\@" for c in host):
        raise PeerError("the destination's host is a name or an address")
    if not port.strip().isdigit() or not 1 <= int(port) <= 65535:
        raise PeerError("the destination's port is a number from 1 to 65535")
    return {"host": host, "port": int(port)}


async def callers_elsewhere(engine: Engine, tenant: str) -> set[str]:
    """The calling AE titles the other tenants list: AE titles are one namespace for the whole node (the
    listener finds the tenant of an association by its calling AE title), so a title belongs to one tenant."""
    titles: set[str] = set()
    for other in await engine.tenant_names():
        if other != tenant:
            titles.update((await read(await engine.tenant(other))).get("callers") or {})
    return titles


async def change(store: TenantStore, kind: str, action: str, form: dict[str, str], taken: set[str]) -> str:
    """Apply one change posted from the admin page (``kind`` caller|destination, ``action`` save|remove);
    what was done, in words (for the AuditEvent). ``taken``: the calling AE titles of other tenants
    (``callers_elsewhere``), which this tenant may not list."""
    if kind not in ("caller", "destination") or action not in ("save", "remove"):
        raise PeerError("no such change")
    title = ae_title(form.get("ae_title", ""))
    if kind == "caller" and action == "save" and title in taken:
        raise PeerError(f"the AE title {title} is already used by another organisation")
    async with store.transaction() as tx:  # read and write together: two admins' changes never undo each other
        peers = await read(tx)
        said = _changed(peers, kind, action, title, form)
        try:
            await write_setting_in(tx, SETTING, peers)
        except ValueError as too_large:  # the stored setting's size bound (tenant_settings.MAX_SETTING_BYTES)
            raise PeerError("the organisation's DICOM peers are at their size limit: remove some first") from too_large
    return said


def _changed(peers: dict[str, Any], kind: str, action: str, title: str, form: dict[str, str]) -> str:
    listed: dict[str, Any] = peers.setdefault("callers" if kind == "caller" else "destinations", {})
    if action == "remove":
        if listed.pop(title, None) is None:
            raise PeerError(f"no {kind} {title}")
        said = f"removed the {kind} {title}"
    else:
        if title not in listed and len(listed) >= MAX_PEERS:
            raise PeerError(f"at most {MAX_PEERS} of each")
        if kind == "caller":
            services = [s for s in SERVICES if form.get(f"service-{s}") == "on"]
            listed[title] = caller_entry(services, form.get("hosts", ""))
            said = f"calling AE {title}: services {', '.join(listed[title]['services']) or 'none'}"
            said += f" from {', '.join(listed[title]['hosts'])}" if listed[title]["hosts"] else ""
        else:
            listed[title] = destination_entry(form.get("host", ""), form.get("port", ""))
            said = f"C-MOVE destination {title} at {listed[title]['host']}:{listed[title]['port']}"
    return said
