"""The node: overlay, presence, peer view and control endpoint in one trio service."""

from dmoa_p2p.node._control import ControlError, call_control
from dmoa_p2p.node._dialer import peer_id_of_multiaddr
from dmoa_p2p.node._node import (
    PRESENCE_TOPIC,
    Node,
    load_admission,
    open_node,
    serve_node,
)
from dmoa_p2p.node._peer_view import PeerRecord, PeerView

__all__ = [
    "PRESENCE_TOPIC",
    "ControlError",
    "Node",
    "PeerRecord",
    "PeerView",
    "call_control",
    "load_admission",
    "open_node",
    "peer_id_of_multiaddr",
    "serve_node",
]
