"""The nodes of a run: real `Node`s with metered fake backends, in memory or on localhost libp2p."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

from dmoa_p2p.backends import ChatMessage, Generation, GenerationParams
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.config import LOCALHOST_LISTEN, NodeConfig
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import Node, open_node
from dmoa_p2p.overlay import MemoryNetwork, Overlay
from dmoa_p2p.simulate._model import RunConfig

EPOCH = 1.8e9  # wall clock the message gates see under MockClock: virtual time plus an epoch


def virtual_wall_clock() -> float:
    return EPOCH + trio.current_time()


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


def _node_config(config: RunConfig, data_dir: Path, bootstrap: tuple[str, ...]) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir,
        listen_addrs=(LOCALHOST_LISTEN,),
        bootstrap=bootstrap,
        presence_interval_s=config.presence_interval_s,
        admission=config.admission,
        admission_options=dict(config.admission_options),
        queue_capacity=config.queue_capacity,
    )


def _dial_addr(node: Node) -> str:
    # libp2p listens on 127.0.0.1; the in-memory overlay has a single /memory/… address
    return next((a for a in node.listen_addrs if "/127.0.0.1/" in a), node.listen_addrs[0])


OverlayContext = AbstractAsyncContextManager[Overlay]
OverlayOpener = Callable[[NodeIdentity, Sequence[str]], OverlayContext]


@contextlib.asynccontextmanager
async def open_swarm(
    config: RunConfig, backends: Sequence[MeteredBackend], *, real: bool
) -> AsyncIterator[list[Node]]:
    """n nodes bootstrapped from the first; yields once every peer view is complete.

    real=False: the in-memory overlay (`latency_s` each way) and a virtual wall clock, for
    trio's MockClock. real=True: py-libp2p on 127.0.0.1 and the real clocks. Both go through
    `open_node` like `swarm.open_inprocess_swarm`, which cannot be used as is: every node
    here needs its own metered backend, α and seeded identity.
    """
    opener: OverlayOpener | None = None
    wall_clock: Callable[[], float] = time.time
    if not real:
        network = MemoryNetwork(latency_s=config.latency_s)

        def opener(identity: NodeIdentity, _: Sequence[str]) -> OverlayContext:
            return network.open_overlay(identity)

        wall_clock = virtual_wall_clock
    # NodeConfig needs a data directory; with the identity given and no control socket
    # nothing is written to it
    with tempfile.TemporaryDirectory(prefix="dmoa-sim-", dir="/tmp") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[Node] = []
            for i, backend in enumerate(backends):
                bootstrap = (_dial_addr(nodes[0]),) if nodes else ()
                settings = _node_config(config, Path(tmp) / f"node{i}", bootstrap)
                node = await stack.enter_async_context(
                    open_node(
                        settings,
                        identity=NodeIdentity.from_seed(config.identity_seed(i)),
                        overlay_opener=opener,
                        backend=backend,
                        control=False,
                        wall_clock=wall_clock,
                        rng=config.rng("proposers", i),  # repeatable choices of proposers
                    )
                )
                nodes.append(node)
            await _wait_converged(nodes, timeout_s=60.0)
            yield nodes


async def _wait_converged(nodes: Sequence[Node], timeout_s: float) -> None:
    everyone = {n.peer_id for n in nodes}
    with trio.fail_after(timeout_s):
        while not all(n.live_peer_ids() == everyone - {n.peer_id} for n in nodes):  # noqa: ASYNC110
            await trio.sleep(0.05)
