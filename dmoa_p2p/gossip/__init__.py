"""Gossip policies: how MoA tasks and their results travel between nodes.

`Envelope`, `Overlay` and `OverlayError` are re-exported for gossip plugin authors.
"""

from dmoa_p2p.gossip._policies import (
    MOA_PROTOCOL,
    MOA_TOPIC,
    Admit,
    ClockSkew,
    Deliver,
    DirectGossip,
    GossipPolicy,
    PeerUnreachable,
    PubsubGossip,
)
from dmoa_p2p.overlay import Overlay, OverlayError
from dmoa_p2p.wire import Envelope

__all__ = [
    "MOA_PROTOCOL",
    "MOA_TOPIC",
    "Admit",
    "ClockSkew",
    "Deliver",
    "DirectGossip",
    "Envelope",
    "GossipPolicy",
    "Overlay",
    "OverlayError",
    "PeerUnreachable",
    "PubsubGossip",
]
