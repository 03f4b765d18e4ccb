"""Whether a node is publicly reachable, as far as its own addresses tell (no dial-back yet)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import re
import socket
import struct
from collections.abc import Iterable, Sequence

from dmoa_p2p.config import REACHABILITIES

# Not `ipaddress.is_private`: that also counts documentation and benchmarking ranges
# (198.51.100.0/24, 198.18.0.0/15), which are routed like any public address in the NAT lab.
_NOT_ROUTED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
_WILDCARDS = ("0.0.0.0", "::")
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def is_private_ip(text: str) -> bool:
    """True for an address the internet cannot route to: RFC 1918, CGNAT, loopback, link-local
    (and their IPv6 kin), or anything that is not an IP address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _NOT_ROUTED if net.version == ip.version)


def publicly_reachable(reachability: str, listen_addrs: Sequence[str]) -> bool:
    """`reachability` decided: "auto" means public unless every address the node listens on
    (each interface's, for a wildcard) is private; a first guess, since a firewall or a
    NAT in front of a public address is not seen this way."""
    if reachability not in REACHABILITIES:
        raise ValueError(f"reachability must be one of {REACHABILITIES}, not {reachability!r}")
    if reachability != "auto":
        return reachability == "public"
    hosts: list[str] = []
    for addr in listen_addrs:
        match = re.match(r"/(ip4|ip6)/([^/]+)", addr)
        if match is None:
            continue
        hosts += interface_ips() if match[2] in _WILDCARDS else [match[2]]
    return any(not is_private_ip(host) for host in hosts)


def interface_ips(names: Iterable[str] | None = None) -> list[str]:
    """This machine's IPv4 interface addresses (Linux; none found elsewhere)."""
    found: list[str] = []
    if names is None:
        with contextlib.suppress(OSError):
            names = [name for _index, name in socket.if_nameindex()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names or ():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # an interface without an IPv4 address
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(answer[20:24]))
    return found


def concrete_addrs(addrs: Sequence[str], interfaces: Sequence[str] | None = None) -> list[str]:
    """`addrs` with each IPv4 wildcard (`/ip4/0.0.0.0/...`) replaced by the same address on
    every interface's IP (`interfaces`, default `interface_ips()`), loopback last.

    A wildcard is where a node listens, not where anyone can reach it: peers told
    `0.0.0.0` dial themselves (trap G4).
    """
    ips = sorted(interface_ips() if interfaces is None else interfaces, key=_loopback_last)
    found: list[str] = []
    for addr in addrs:
        head, wildcard, rest = addr.partition("/ip4/0.0.0.0/")
        if not wildcard or head:
            found.append(addr)
            continue
        found += [f"/ip4/{ip}/{rest}" for ip in ips]
    return list(dict.fromkeys(found))


def _loopback_last(ip: str) -> bool:
    return ip.startswith("127.")
