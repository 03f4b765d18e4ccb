"""The node: overlay, queue, MoA engine, presence and peer view, as one trio service."""

from dmoa_p2p.node._node import Node, OverlayOpener, open_node
from dmoa_p2p.node._peer_view import PeerRecord, PeerView
from dmoa_p2p.node._presence import PRESENCE_TOPIC
from dmoa_p2p.node._prompts import AdmittedPrompt, load_admission
from dmoa_p2p.node._snapshot import NodeSnapshot, PeerEntry, SwarmLoad

__all__ = [
    "PRESENCE_TOPIC",
    "AdmittedPrompt",
    "Node",
    "NodeSnapshot",
    "OverlayOpener",
    "PeerEntry",
    "PeerRecord",
    "PeerView",
    "SwarmLoad",
    "load_admission",
    "open_node",
]
