"""Which addresses a template or ISO URL may lead to, judged where the name is resolved.

The engine judges a URL when it is registered and the agent judges it again when the
download starts (a name's DNS answer can change in between): a host name resolving to a
loopback, link-local, unspecified or multicast address, or into one of the cloud's
management networks, is refused unless one of the allowed networks
(`secstorage.allowed.internal.sites`) contains the address. The agent then connects to
the address it judged, never to a second answer for the same name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

ALLOWED_SITES = "secstorage.allowed.internal.sites"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(ValueError):
    """The URL cannot be downloaded from; the message says why (without the URL)."""


def internal_reason(address: Address, management: Iterable[tuple[Network, str]] = ()) -> str | None:
    """Why `address` is inside the cloud (`management`: (network, pod name) pairs), or None."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_multicast:
        return "not a host address"
    for network, name in management:
        if address in network:
            return f"in the management network {network} of pod {name}"
    return None


def networks(items: Iterable[str]) -> list[Network]:
    """The CIDRs of `items` that parse; the others are left out."""
    found = []
    for item in items:
        try:
            found.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            continue
    return found


def resolve(url: str, allowed: Iterable[Network] = (),
            management: Iterable[tuple[Network, str]] = ()) -> tuple[str, int, list[Address]]:
    """(host name, port, its addresses) of an http(s) `url`, every address judged; raises Refused."""
    parts = urlsplit(url or "")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Refused("only http and https URLs can be downloaded")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, ValueError) as e:
        raise Refused(f"cannot resolve {parts.hostname} ({e})") from None
    allowed, management = list(allowed), list(management)
    addresses: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = internal_reason(address, management)
        if reason and not any(address in network for network in allowed):
            raise Refused(f"{parts.hostname} resolves to {address}, {reason}; downloads from there are refused "
                          f"unless {ALLOWED_SITES} allows it (a comma-separated CIDR list)")
        if address not in addresses:
            addresses.append(address)
    return parts.hostname, port, addresses
