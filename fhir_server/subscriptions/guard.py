"""Which rest-hook endpoints the server may call (subscription.html#security: "the server SHALL
ensure notifications are only sent to appropriate endpoints").

A Subscription lets a client make the server send requests; without a guard that is a
server-side request forgery into the server's own network (loopback services, cloud metadata at
169.254.169.254, private ranges) and, through ``Subscription.error``, a port scanner. So an
endpoint whose host is, or resolves to, a loopback, private (RFC 1918, fc00::/7), link-local
(169.254/16, fe80::/10), unspecified, multicast, reserved or otherwise non-global address is
refused, unless the operator allows the host or its network
(``DERMBRIDGE_SUBSCRIPTION_ALLOWED_HOSTS``: host names and CIDRs, empty by default).

The check runs at activation (422) and again at each delivery on the resolved addresses; the
delivery connects to the address checked (DNS rebinding cannot swap it in between).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_ADDRESSES = 16


class EndpointRefused(Exception):
    """The endpoint's host is not one the server may call."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes: the address to connect to (None: the host as named, allow-listed)."""

    host: str
    address: IpAddress | None


class EndpointGuard:
    """The allow-list and the address rules; ``allowed``: host names (exact, case-insensitive) or CIDRs."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.networks: list[IpNetwork] = []
        for entry in allowed:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.names.add(entry.strip().lower().rstrip("."))

    def permits(self, address: IpAddress) -> bool:
        if any(address in network for network in self.networks):
            return True
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            return self.permits(mapped)
        return address.is_global and not (address.is_multicast or address.is_reserved or address.is_private)

    async def resolve(self, host: str, port: int) -> Target:
        """The address a delivery to ``host`` connects to; raises ``EndpointRefused``."""
        name = host.lower().rstrip(".")
        if name in self.names:
            return Target(host, None)
        try:
            literal: IpAddress | None = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else await _lookup(name, port)
        if not addresses:
            raise EndpointRefused(f"the endpoint host {host!r} does not resolve")
        refused = [a for a in addresses if not self.permits(a)]
        if refused:
            raise EndpointRefused(
                f"the endpoint host {host!r} is not allowed: it is (or resolves to) a loopback, private, "
                "link-local or reserved address; an operator may allow it in DERMBRIDGE_SUBSCRIPTION_ALLOWED_HOSTS"
            )
        return Target(host, addresses[0])


async def _lookup(name: str, port: int) -> list[IpAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[IpAddress] = []
    for *_, sockaddr in infos[:MAX_ADDRESSES]:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found
