"""Gossip policies: how MoA tasks and their results travel between nodes."""

from dmoa_p2p.gossip._policies import (
    MOA_PROTOCOL,
    MOA_TOPIC,
    Admit,
    Deliver,
    DirectGossip,
    GossipPolicy,
    PeerUnreachable,
    PubsubGossip,
)

__all__ = [
    "MOA_PROTOCOL",
    "MOA_TOPIC",
    "Admit",
    "Deliver",
    "DirectGossip",
    "GossipPolicy",
    "PeerUnreachable",
    "PubsubGossip",
]
