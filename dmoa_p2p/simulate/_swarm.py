"""The nodes of a run: real `Node`s with metered fake backends, in memory or on localhost libp2p."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import trio

from dmoa_p2p.backends import ChatMessage, Generation, GenerationParams
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import Node, OverlayOpener, open_node
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.simulate._model import RunConfig
from dmoa_p2p.swarm import member_config, swarm_dir
from dmoa_p2p.testing import memory_opener, open_swarm, wall_clock


class MeteredBackend(FakeBackend):
    """The fake backend (exponential service times) that also adds up its busy time.

    Only time inside `window` counts, so a device's busy fraction over the measured part of
    a run is `busy_s / window length`.
    """

    def __init__(self, mean_s: float, seed: int) -> None:
        super().__init__(mean_s, distribution="exponential", seed=seed)
        self.window = (0.0, 0.0)
        self.busy_s = 0.0

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        started = trio.current_time()
        try:
            return await super().generate(messages, params)
        finally:
            low, high = self.window
            self.busy_s += max(0.0, min(high, trio.current_time()) - max(low, started))


@contextlib.asynccontextmanager
async def open_run_swarm(
    config: RunConfig, backends: Sequence[MeteredBackend], *, real: bool
) -> AsyncIterator[list[Node]]:
    """n nodes, each bootstrapped from a random earlier one; yields once the views converged.

    real=False: the in-memory overlay (`latency_s` each way) and the virtual wall clock, for
    trio's MockClock. real=True: py-libp2p on 127.0.0.1 and the real clocks. Every node has
    its own metered backend, α, seeded identity and seeded choice of proposers.
    """
    opener: OverlayOpener | None = None
    clock: Callable[[], float] = time.time
    if not real:
        opener = memory_opener(MemoryNetwork(latency_s=config.latency_s))
        clock = wall_clock
    # NodeConfig needs a data directory; with the identity given nothing is written to it
    with swarm_dir(None, prefix="dmoa-sim-") as base:

        def member(i: int, bootstrap: tuple[str, ...]) -> AbstractAsyncContextManager[Node]:
            settings = member_config(
                base / f"node{i}",
                bootstrap,
                presence_interval_s=config.presence_interval_s,
                admission=config.admission,
                admission_options=dict(config.admission_options),
                queue_capacity=config.queue_capacity,
            )
            return open_node(
                settings,
                identity=NodeIdentity.from_seed(config.identity_seed(i)),
                overlay_opener=opener,
                backend=backends[i],
                wall_clock=clock,
                rng=config.rng("proposers", i),  # repeatable choices of proposers
                writes_in_thread=False,
            )

        spread = config.rng("bootstrap")  # each node's contact: an earlier one, at random
        # at n = 1000, 1-3 % of nodes hold fewer than JOINED_PEERS at any moment
        short_allowed = len(backends) // 25
        async with open_swarm(
            len(backends),
            member,
            timeout_s=60.0,
            poll_s=0.05,
            spread=spread,
            short_allowed=short_allowed,
        ) as nodes:
            yield nodes
