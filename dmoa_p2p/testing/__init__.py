"""Testing kit for dmoa-p2p and its plugins: virtual time, fake backends, swarms of real nodes."""

from dmoa_p2p.testing._backends import fake_backend_config, fake_backends
from dmoa_p2p.testing._libp2p import Libp2pSwarmFactory, free_tcp_port, libp2p_swarm
from dmoa_p2p.testing._memory import (
    MemorySwarmFactory,
    memory_node,
    memory_opener,
    memory_swarm,
    seeded_identity,
)
from dmoa_p2p.testing._messages import idle_presence
from dmoa_p2p.testing._swarm import MemberOpener, converged, open_swarm
from dmoa_p2p.testing._time import EPOCH, wait_for, wall_clock

__all__ = [
    "EPOCH",
    "Libp2pSwarmFactory",
    "MemberOpener",
    "MemorySwarmFactory",
    "converged",
    "fake_backend_config",
    "fake_backends",
    "free_tcp_port",
    "idle_presence",
    "libp2p_swarm",
    "memory_node",
    "memory_opener",
    "memory_swarm",
    "open_swarm",
    "seeded_identity",
    "wait_for",
    "wall_clock",
]
