"""Hole punching (DCUtR) on the py-libp2p host, what kind each link is, and what the host names."""

from __future__ import annotations

import logging
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.transport.exceptions import OpenConnectionError
from libp2p.transport.tcp import tcp as libp2p_tcp

from dmoa_p2p.overlay._reachability import concrete_addrs
from dmoa_p2p.overlay._relay import is_circuit, is_relayed

_log = logging.getLogger(__name__)

# py-libp2p's default 10 s holds every punch that cannot succeed (a resetting or symmetric
# NAT) for 10 s per address (trap G5); through port-preserving NATs a punch lands in ~2 s
DIAL_TIMEOUT_S = 2
# a direct dial to a peer's own addresses before punching: enough for a LAN
UNILATERAL_DIAL_S = 0.5
# each interface's address, then those identify's observers confirmed (4 distinct ones each)
MAX_DIRECT_ADDRS = 8

DIRECT, RELAYED = "direct", "relayed"


class HolePunching(DCUtRProtocol):  # type: ignore[misc]
    """DCUtR for a host: every relayed connection it holds is tried for a direct upgrade (by
    py-libp2p's own loop, every 2 s, at most 3 tries per peer; `punch` starts one at once),
    and the relayed one is closed 60 s after a direct one works (`ReconnectingPubsub` keeps
    gossip going across)."""

    def __init__(self, host: Any) -> None:
        super().__init__(host, dial_timeout=DIAL_TIMEOUT_S)

    async def punch(self, peer: ID) -> None:
        """Try for a direct link to `peer` now, rather than at the loop's next round."""
        try:
            await self.initiate_hole_punch(peer)
        except Exception as exc:  # the relayed connection went, or the peer does not speak it
            _log.debug("hole punch to %s failed: %r", peer, exc)

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        """Dial the peer's own addresses first, as py-libp2p does, but give up after
        UNILATERAL_DIAL_S rather than the full dial timeout: a peer on the same LAN answers
        within milliseconds, and a home address seen from across the internet never does,
        which held every punch back 2 s."""
        try:
            addrs = [a for a in self.host.get_peerstore().addrs(peer_id) if not is_circuit(a)]
        except Exception:  # PeerStoreError: no address known
            return False
        if not addrs:
            return False
        with trio.move_on_after(UNILATERAL_DIAL_S):
            async with trio.open_nursery() as nursery:
                for addr in addrs[:MAX_DIRECT_ADDRS]:
                    nursery.start_soon(self._dial_peer, peer_id, addr)
        return bool(await self._verify_direct_connection(peer_id))


def link_kind(host: Any, peer: ID) -> str | None:
    """DIRECT when any open connection to `peer` is direct, RELAYED when all go through a
    relay, None when there is none."""
    kinds = {
        RELAYED if is_relayed(connection) else DIRECT
        for connection in host.get_network().get_connections(peer)
        if not getattr(getattr(connection, "muxed_conn", None), "is_closed", True)
    }
    return DIRECT if DIRECT in kinds else (RELAYED if kinds else None)


def advertised_addrs(candidates: list[Any]) -> list[Any]:
    """The addresses the host names to peers (identify, DCUtR), as its `addrs_factory`: each
    interface's for a wildcard, never the wildcard itself (trap G4: DCUtR dials it, reaches
    itself and stalls), then the observed ones, a few.

    No `/p2p-circuit` address: py-libp2p 0.8.1's `get_addrs` strips the first `/p2p/` part of
    each address and appends its own id, which turns `<relay>/p2p/<relay id>/p2p-circuit` into
    the relay's own address under this node's id. Presence names the circuits instead.
    """
    direct = concrete_addrs([str(addr) for addr in candidates if not is_circuit(addr)])
    return [multiaddr.Multiaddr(addr) for addr in direct[:MAX_DIRECT_ADDRS]]



async def _open_tcp_stream_from(host: str, port: int, source: tuple[str, int]) -> trio.SocketStream:
    """py-libp2p 0.8.1's hole-punch dial (a TCP socket bound to the listen port, so that the
    NAT maps it to the address DCUtR advertised), with the socket closed when the dial is
    cancelled: the original closes it on OSError only, and DCUtR cancels every dial still
    under way once one succeeds, leaking a descriptor each time. Shown by
    tests/integration/test_libp2p_holepunch.py."""
    src_ip, _src_port = source
    if (":" in src_ip) != (":" in host):
        raise OpenConnectionError(f"Source/destination IP family mismatch: {src_ip} vs {host}")
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    try:
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise OpenConnectionError(f"Failed to create TCP socket: {exc}") from exc
    try:
        libp2p_tcp._set_reuse_flags(sock)
        try:
            await sock.bind(source)
        except OSError:  # the listen port cannot be shared here: an ordinary dial still works
            sock.close()
            return await trio.open_tcp_stream(host, port)
        await sock.connect((host, port))
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise OpenConnectionError(f"Failed to connect {host}:{port}: {exc}") from exc
        raise
    return trio.SocketStream(sock)


_leaky_open_from = libp2p_tcp._open_tcp_stream_from
libp2p_tcp._open_tcp_stream_from = _open_tcp_stream_from
