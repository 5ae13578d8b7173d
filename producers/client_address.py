"""The client's IP address of a request, honouring `X-Forwarded-For` / `Forwarded` only from trusted
proxies (the console and both middlewares read addresses through this one resolver)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

UNKNOWN_ADDRESS = "0.0.0.0"
"""Recorded when the peer address is not an IP address (a Unix socket, a test client)."""


@lru_cache(maxsize=65_536)
def parse_address(text: str) -> str | None:
    """The canonical form of an address, tolerating `1.2.3.4:80`, `[::1]:80` and `[::1]`; or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has two or more colons
        text = text.split(":", 1)[0]
    try:
        return str(ip_address(text))
    except ValueError:
        return None


def forwarded_for_hops(forwarded: str) -> str:
    """The `for=` hops of an RFC 7239 `Forwarded` header, comma-separated like `X-Forwarded-For`
    (`for="[2001:db8::1]:4711"` becomes `[2001:db8::1]:4711`; a hop without `for=` becomes `unknown`)."""
    hops = []
    for element in forwarded.split(","):
        value = "unknown"
        for pair in element.split(";"):
            name, _, raw = pair.strip().partition("=")
            if name.strip().lower() == "for":
                value = raw.strip().strip('"')
        hops.append(value)
    return ",".join(hops)


class ClientAddressResolver:
    """Which address a request came from.

    The peer (the TCP connection's address) is the client, unless the peer is one of
    `trusted_proxies` (addresses or CIDRs) and sent `X-Forwarded-For`: then the hops are read from
    the right, skipping trusted proxies, and the first untrusted address is the client. A hop that
    is not an address stops the walk (the last address read is used). With no trusted proxies,
    `X-Forwarded-For` is ignored: any client can write it.
    """

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.networks: tuple[IPv4Network | IPv6Network, ...] = tuple(
            ip_network(cidr.strip(), strict=False) for cidr in trusted_proxies
        )
        self._trusted = lru_cache(maxsize=65_536)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        parsed = ip_address(address)
        return any(parsed in network for network in self.networks)

    def resolve(self, peer: str | None, forwarded_for: str | None = None, forwarded: str | None = None) -> str:
        """The client address for a request from `peer` carrying `X-Forwarded-For: forwarded_for` and/or
        `Forwarded: forwarded` (RFC 7239; preferred when both are sent). Headers from an untrusted
        peer are ignored: any client can write them."""
        address = parse_address(peer) if peer else None
        if address is None:
            return UNKNOWN_ADDRESS
        if not self.networks or not self._trusted(address):
            return address
        if forwarded:
            forwarded_for = forwarded_for_hops(forwarded)
        if not forwarded_for:
            return address
        for hop in reversed(forwarded_for.split(",")):
            parsed = parse_address(hop)
            if parsed is None:
                return address
            address = parsed
            if not self._trusted(address):
                return address
        return address
