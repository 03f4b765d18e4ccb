"""Hole punching (DCUtR) on the py-libp2p host, what kind each link is, and what the host names."""

from __future__ import annotations

from typing import Any

import multiaddr
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

from dmoa_p2p.overlay._reachability import concrete_addrs

# py-libp2p's default 10 s holds every punch that cannot succeed (a resetting or symmetric
# NAT) for 10 s per address (trap G5); through port-preserving NATs a punch lands in ~2 s
DIAL_TIMEOUT_S = 2
# each interface's address, then those identify's observers confirmed (4 distinct ones each)
MAX_DIRECT_ADDRS = 8

DIRECT, RELAYED = "direct", "relayed"


def hole_punching(host: Any) -> DCUtRProtocol:
    """DCUtR for `host`: every relayed connection it holds is tried for a direct upgrade
    (by py-libp2p's own loop, every 2 s, at most 3 tries per peer), and the relayed one is
    closed 60 s after a direct one works; `ReconnectingPubsub` keeps gossip going across."""
    return DCUtRProtocol(host, dial_timeout=DIAL_TIMEOUT_S)


def is_relayed(connection: Any) -> bool:
    return connection.get_connection_type() is ConnectionType.RELAYED


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
    direct = concrete_addrs([str(addr) for addr in candidates if "/p2p-circuit" not in str(addr)])
    return [multiaddr.Multiaddr(addr) for addr in direct[:MAX_DIRECT_ADDRS]]
