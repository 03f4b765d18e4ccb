"""Checks of the addresses a node is given, done before it starts: peers' and its own."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any

from dmoa_p2p.overlay._protocol import BadAddress, PortInUse

_MEMORY = re.compile(r"/memory/\d+/p2p/\w+")
_EXAMPLE = "/ip4/HOST/tcp/PORT/p2p/PEER_ID"


def check_peer_address(addr: str) -> str:
    """The peer id `addr` names, or BadAddress saying in one line what is wrong with it.

    `addr` must be a full multiaddr (…/p2p/<peer id>) whose every part parses: an IP address
    that is one, a port in range, a peer id that decodes. A mistake there would otherwise be
    retried forever in silence.
    """
    if addr.startswith("/memory/"):  # the in-memory overlay's addresses
        if not _MEMORY.fullmatch(addr):
            raise BadAddress(f"{addr!r} is not a /memory/<n>/p2p/<peer id> address")
        return addr.rpartition("/p2p/")[2]
    import multiaddr  # 30 ms, paid only when a node starts

    try:
        parsed = multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise BadAddress(f"{addr!r} is not a valid peer address: {_why(exc)}") from exc
    peer_id = parsed.get_peer_id()
    where = addr.rstrip("/").removesuffix(f"/p2p/{peer_id}")
    if peer_id is None or where == addr.rstrip("/"):
        raise BadAddress(f"{addr!r} does not end with /p2p/<peer id> (e.g. {_EXAMPLE})")
    if not where:
        raise BadAddress(f"{addr!r} names no host and port before /p2p/ (e.g. {_EXAMPLE})")
    return str(peer_id)


def address_host(addr: str) -> str | None:
    """The host `addr` is on, as `Overlay.remote_host` names hosts: the IP of an /ip4/ or /ip6/
    address in its canonical form, the listener number of a /memory/ one; None for any other
    kind (a DNS name says nothing of where a connection comes from)."""
    match = re.match(r"/(ip4|ip6|memory)/([^/]+)(/|$)", addr)
    if match is None:
        return None
    return match[2] if match[1] == "memory" else canonical_ip(match[2])


def canonical_ip(text: str) -> str | None:
    """`text` as one IP address is always written (an IPv4-mapped IPv6 address as the IPv4
    one, which a dual-stack socket reports); None if it is not an IP address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def socket_peer(connection: Any) -> tuple[str, int] | None:
    """The (IP, port) a libp2p connection's socket is connected to (not the "transport
    addresses", which may be the peer's own claims); None before its handshake ends."""
    muxed = getattr(connection, "muxed_conn", None)
    remote = muxed.get_remote_address() if muxed is not None else None
    if remote is None or (ip := canonical_ip(str(remote[0]))) is None:
        return None
    return ip, int(remote[1])


def _why(exc: BaseException) -> str:
    """multiaddr's reason without the address it repeats twice around it."""
    text = str(exc)
    text = re.sub(r"^Invalid MultiAddr '[^']*': ", "", text)
    text = re.sub(r" \(string: [^)]*\)$", "", text)
    text = re.sub(r"^Invalid CID: (.*)$", r"'\1' is not a peer id", text)
    return text or type(exc).__name__


def check_listen_ports(listen_addrs: Sequence[str]) -> None:
    """PortInUse if a fixed TCP port in `listen_addrs` is already taken by anyone.

    py-libp2p listens with SO_REUSEPORT (for hole punching), so a second node on a taken port
    starts anyway and the kernel splits incoming connections between the two processes.
    Binding the port first without SO_REUSEPORT fails if any socket listens there. SO_REUSEADDR
    still lets a restarted node take its port back while old connections sit in TIME_WAIT.
    """
    for addr in listen_addrs:
        match = re.fullmatch(r"/(ip4|ip6)/([^/]+)/tcp/(\d+)(/.*)?", addr)
        if match is None or int(match[3]) == 0:
            continue
        family = socket.AF_INET if match[1] == "ip4" else socket.AF_INET6
        port = int(match[3])
        with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((match[2], port))
                probe.listen(1)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(
                        f"cannot listen on {addr}: TCP port {port} is already in use (another "
                        "node?); stop it or choose another port with --listen"
                    ) from exc
                raise BadAddress(f"cannot listen on {addr}: {exc.strerror or exc}") from exc
