"""Client networks as the detectors group them: /24 for IPv4, /48 for IPv6.

A network is remembered by a short prefix string: `10.20.30` for 10.20.30.0/24 and
`2001:0db8:0001` for 2001:db8:1::/48. IPv4-mapped IPv6 addresses count as IPv4.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=4096)
def _ipv6_prefix(ip: str) -> str:
    address = ipaddress.IPv6Address(ip)
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped).rpartition(".")[0]
    return address.exploded[:14]


@lru_cache(maxsize=1 << 16)
def network_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) prefix of an address, in its short stored form.

    Cached: detectors ask for the network of every new address of every key, batch after batch."""
    if ":" not in ip:
        return ip.rpartition(".")[0]
    try:
        return _ipv6_prefix(ip)
    except ValueError:
        return ip


def is_ipv6(network: str) -> bool:
    return ":" in network


@lru_cache(maxsize=1 << 14)
def parent_of(network: str) -> str:
    """The /16 around a /24 (`10.20`), or the /32 around a /48 (`2001:0db8`): one operator's block."""
    return network.rpartition(":" if is_ipv6(network) else ".")[0]


def network_text(network: str) -> str:
    """`10.20.30.0/24` or `2001:db8:1::/48`."""
    if is_ipv6(network):
        try:
            return str(ipaddress.IPv6Network(f"{network}::/48"))
        except ValueError:
            return network
    return f"{network}.0/24"


def parent_text(network: str) -> str:
    """`10.20.0.0/16` or `2001:db8::/32`."""
    parent = parent_of(network)
    if is_ipv6(network):
        try:
            return str(ipaddress.IPv6Network(f"{parent}::/32"))
        except ValueError:
            return parent
    return f"{parent}.0.0/16"


@lru_cache(maxsize=1 << 14)
def is_private(network: str) -> bool:
    """Private, shared (CGNAT), loopback or link-local space: addresses inside an organisation."""
    if is_ipv6(network):
        head = network[:4].lower()
        return head.startswith(("fc", "fd", "fe8", "fe9", "fea", "feb")) or network == "0000:0000:0000"
    octets = network.split(".")
    try:
        first, second = int(octets[0]), int(octets[1])
    except (IndexError, ValueError):
        return False
    return (
        first in (10, 127)
        or (first == 172 and 16 <= second <= 31)
        or (first == 192 and second == 168)
        or (first == 100 and 64 <= second <= 127)
        or (first == 169 and second == 254)
    )


def networks_with_counts(ips: Iterable[str], limit: int = 10) -> list[str]:
    """`203.0.113.0/24 (12 IPs)` for the busiest networks among `ips`, busiest first."""
    counts = Counter(network_of(ip) for ip in ips)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [f"{network_text(net)} ({n} IP{'s' if n != 1 else ''})" for net, n in ranked]
