"""The peer-to-peer overlay: signed pubsub topics and direct messages, real or in-process."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay._addresses import address_host, check_peer_address
from dmoa_p2p.overlay._lan_peers import MDNS_SERVICE
from dmoa_p2p.overlay._memory import MemoryNetwork
from dmoa_p2p.overlay._protocol import (
    BadAddress,
    DirectHandler,
    DirectScreen,
    Overlay,
    OverlayError,
    OverlayMessage,
    PortInUse,
    ProtocolUnsupported,
    Provider,
    Reachability,
    TopicValidator,
)
from dmoa_p2p.overlay._providers import MAX_PROVIDERS, model_key

__all__ = [
    "MAX_PROVIDERS",
    "MDNS_SERVICE",
    "BadAddress",
    "DirectHandler",
    "DirectScreen",
    "MemoryNetwork",
    "Overlay",
    "OverlayError",
    "OverlayMessage",
    "PortInUse",
    "ProtocolUnsupported",
    "Provider",
    "Reachability",
    "TopicValidator",
    "address_host",
    "check_peer_address",
    "model_key",
    "open_libp2p_overlay",
]


def open_libp2p_overlay(
    identity: NodeIdentity,
    listen_addrs: Sequence[str],
    *,
    heartbeat_interval: float = 1.0,
    max_queued_per_peer: int = 8,
    publish_timeout: float = 10.0,
    relay_service: bool = True,
    reachability: str = "auto",
    bootstrap: Sequence[str] = (),
    mdns: str | None = None,
    dht: bool = True,
) -> AbstractAsyncContextManager[Overlay]:
    """Run a py-libp2p GossipSub node for the `async with` block (see `_libp2p`)."""
    # importing libp2p takes ~1 s: pay it only when a real node starts
    from dmoa_p2p.overlay._libp2p import open_libp2p_overlay as _open

    return _open(
        identity,
        listen_addrs,
        heartbeat_interval=heartbeat_interval,
        max_queued_per_peer=max_queued_per_peer,
        publish_timeout=publish_timeout,
        relay_service=relay_service,
        reachability=reachability,
        bootstrap=bootstrap,
        mdns=mdns,
        dht=dht,
    )
