"""Host names in peer addresses (/dns4/, /dns6/, /dns/), resolved as the system resolves them."""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable

import trio

from dmoa_p2p.overlay._protocol import OverlayError

MAX_RESOLVED = 4  # addresses tried per name
_RESOLVE_TIMEOUT_S = 10.0
_DNS_ADDR = re.compile(r"/(dns|dns4|dns6)/([^/]+)(/.+)")
_FAMILIES = {"dns": socket.AF_UNSPEC, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}


def is_dns(addr: str) -> bool:
    return _DNS_ADDR.fullmatch(addr) is not None


async def resolved(addr: str) -> list[str]:
    """`addr` with its host name replaced by each IP address the name has, at most MAX_RESOLVED.

    Why not py-libp2p's: 0.8.1 asks DNS servers only (multiaddr's DNSResolver), so that a name
    from /etc/hosts (`localhost` too) or the LAN's resolver fails with "IP address not found in
    multiaddr"; the system's resolver (getaddrinfo) knows every name the machine knows.
    """
    match = _DNS_ADDR.fullmatch(addr)
    if match is None:
        return [addr]
    kind, name, rest = match.groups()
    try:
        with trio.fail_after(_RESOLVE_TIMEOUT_S):
            infos = await trio.socket.getaddrinfo(name, None, _FAMILIES[kind], socket.SOCK_STREAM)
    except (OSError, trio.TooSlowError) as exc:
        raise OverlayError(f"cannot connect to {addr!r}: {name!r} does not resolve") from exc
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))[:MAX_RESOLVED]
    return [f"/{'ip6' if ':' in ip else 'ip4'}/{ip}{rest}" for ip in ips]


async def connect_resolved(addr: str, connect: Callable[[str], Awaitable[str]]) -> str:
    """Connect to the first of `addr`'s resolved addresses that answers; its peer id."""
    failure = OverlayError(f"cannot connect to {addr!r}: its name has no address")
    for each in await resolved(addr):
        try:
            return await connect(each)
        except OverlayError as exc:
            failure = exc
    raise failure
