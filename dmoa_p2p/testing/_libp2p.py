"""Real py-libp2p swarms on 127.0.0.1 in this trio run, with the fake backend by default."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from dmoa_p2p.swarm import InProcessSwarm, open_inprocess_swarm

DEFAULT_CONVERGE_S = 30.0


@contextlib.asynccontextmanager
async def libp2p_swarm(
    n: int, base_dir: Path | None = None, *, timeout_s: float = DEFAULT_CONVERGE_S, **config: Any
) -> AsyncIterator[InProcessSwarm]:
    """`n` nodes on 127.0.0.1 (`swarm.open_inprocess_swarm`); yields once all see all.

    `config` holds NodeConfig fields for every node, and `http_base_port`; the backend is
    `fake` unless it names another. SwarmError if the views are not complete after
    `timeout_s`.
    """
    if "listen_addrs" in config:
        raise ValueError("a testing swarm listens on 127.0.0.1 only: leave out listen_addrs")
    async with open_inprocess_swarm(n, base_dir, **{"backend": "fake", **config}) as swarm:
        await swarm.wait_converged(timeout_s)
        yield swarm


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a node that must listen on a
    known port (to restart on it, or take it from another); another program may take it first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Libp2pSwarmFactory(Protocol):
    """The `libp2p_swarm_factory` fixture: `libp2p_swarm` in a fresh directory each call."""

    def __call__(
        self, n: int, *, timeout_s: float = DEFAULT_CONVERGE_S, **config: Any
    ) -> AbstractAsyncContextManager[InProcessSwarm]: ...
