"""`bench overlay`: our signed-envelope layer against bare py-libp2p on a localhost swarm."""

from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence

import trio

from dmoa_p2p.bench._results import BenchSettings, OverlayBenchResult, RunMetrics
from dmoa_p2p.bench._traffic import (
    DMOA,
    VARIANTS,
    BareTraffic,
    DmoaTraffic,
    Traffic,
    bench_presence,
    envelope_bytes,
)
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, OverlayMessage, open_libp2p_overlay

LOCAL = ("/ip4/127.0.0.1/tcp/0",)
TOPIC = "dmoa-p2p/bench/overlay"
# how long to wait for stragglers once everything is published, and for the mesh to form
DRAIN_TIMEOUT_S = 30.0
MESH_TIMEOUT_S = 20.0
_PROBE_WAIT_S = 0.5

# (label, completed, total): called as messages are published
ProgressCallback = Callable[[str, int, int], None]


class BenchError(Exception):
    """The swarm could not be set up (no mesh formed in time)."""


class _Batch:
    """Send times and receipts of one batch of messages, on the process's clocks."""

    def __init__(self, expected: int, receivers: int, window: int) -> None:
        self.expected = expected
        self.receivers = receivers
        self.sent: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.complete = trio.Event()
        # a permit per message in flight: released once every receiver has it
        self.in_flight = trio.Semaphore(window)
        self._missing: dict[bytes, int] = {}
        self.last_wall = 0.0
        self.last_cpu = 0.0

    def sending(self, message_id: bytes, at: float) -> None:
        self.sent[message_id] = at
        self._missing[message_id] = self.receivers

    def record(self, message_id: bytes) -> None:
        sent = self.sent.get(message_id)
        if sent is None:
            return  # from an earlier batch
        now = time.perf_counter()
        self.latencies.append(now - sent)
        # the counted phase ends at its last receipt, even if some never arrive
        self.last_wall = now
        self.last_cpu = time.process_time()
        self._missing[message_id] -= 1
        if not self._missing[message_id]:
            del self._missing[message_id]
            self.in_flight.release()
        if len(self.latencies) == self.expected:
            self.complete.set()


class _Swarm:
    """N overlays with one variant's traffic: receivers run in the background."""

    def __init__(self, overlays: Sequence[Overlay], traffic: Traffic) -> None:
        self.overlays = list(overlays)
        self.traffic = traffic
        self.batch = self._new_batch(0, 1)

    def _new_batch(self, messages: int, window: int) -> _Batch:
        receivers = len(self.overlays) - 1
        return _Batch(messages * receivers, receivers, window)

    async def receive(self, node: int, channel: trio.abc.ReceiveChannel[OverlayMessage]) -> None:
        own = self.overlays[node].peer_id
        async for message in channel:
            message_id = self.traffic.message_id(message.data)
            # the own copy is processed like any other but not counted as a delivery
            if message_id is not None and message.publisher != own:
                self.batch.record(message_id)

    async def publish(self, node: int) -> None:
        sent = time.perf_counter()  # before sealing: that is part of the cost of sending
        message_id, data = self.traffic.make(node)
        self.batch.sending(message_id, sent)
        await self.overlays[node].publish(TOPIC, data)

    async def await_mesh(self) -> None:
        """Until one message from each node reaches every other node (subscriptions and mesh)."""
        with trio.move_on_after(MESH_TIMEOUT_S):
            for node in range(len(self.overlays)):
                while True:
                    self.batch = self._new_batch(1, 1)
                    await self.publish(node)
                    with trio.move_on_after(_PROBE_WAIT_S):
                        await self.batch.complete.wait()
                    if self.batch.complete.is_set():
                        break
            return
        raise BenchError(f"the GossipSub mesh did not form within {MESH_TIMEOUT_S:g} s")

    async def run_batch(
        self, count: int, window: int, label: str, progress: ProgressCallback | None
    ) -> _Batch:
        """Publish `count` messages round-robin, at most `window` of them in flight."""
        batch = self.batch = self._new_batch(count, window)
        for index in range(count):
            with trio.move_on_after(DRAIN_TIMEOUT_S) as stalled:
                await batch.in_flight.acquire()
            if stalled.cancelled_caught:
                break  # messages in flight were lost: report what arrived
            await self.publish(index % len(self.overlays))
            if progress is not None:
                progress(label, index + 1, count)
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            await batch.complete.wait()
        return batch


def _traffic(
    variant: str,
    identities: Sequence[NodeIdentity],
    overlays: Sequence[Overlay],
    payload_bytes: int,
) -> Traffic:
    if variant == DMOA:
        presences = [
            bench_presence(i, o.listen_addrs) for i, o in zip(identities, overlays, strict=True)
        ]
        return DmoaTraffic(identities, presences)
    return BareTraffic(payload_bytes)


@contextlib.asynccontextmanager
async def _open_swarm(nodes: int, variant: str, payload_bytes: int) -> AsyncIterator[_Swarm]:
    """A fresh full mesh of `nodes` overlays, subscribed with `variant`'s validators."""
    identities = [NodeIdentity.generate() for _ in range(nodes)]
    async with contextlib.AsyncExitStack() as stack:
        overlays = [
            await stack.enter_async_context(open_libp2p_overlay(identity, LOCAL))
            for identity in identities
        ]
        # every node dials every earlier one: the same topology for both variants
        for later, earlier in itertools.combinations(reversed(overlays), 2):
            await later.connect(earlier.listen_addrs[0])
        swarm = _Swarm(overlays, _traffic(variant, identities, overlays, payload_bytes))
        async with trio.open_nursery() as nursery:
            for node, overlay in enumerate(overlays):
                channel = await overlay.subscribe(TOPIC, swarm.traffic.validator(node))
                nursery.start_soon(swarm.receive, node, channel)
            await swarm.await_mesh()
            try:
                yield swarm
            finally:
                nursery.cancel_scope.cancel()


async def _run_variant(
    variant: str, round_: int, settings: BenchSettings, progress: ProgressCallback | None
) -> RunMetrics:
    label = f"{variant} round {round_}"
    async with _open_swarm(settings.nodes, variant, settings.payload_bytes) as swarm:
        await swarm.run_batch(settings.warmup, settings.window, f"{label} warm-up", progress)
        gc.collect()  # a collection of set-up garbage must not land in one variant's numbers
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        batch = await swarm.run_batch(settings.messages, settings.window, label, progress)
    return RunMetrics.measure(
        variant,
        round_,
        batch.expected,
        batch.latencies,
        cpu_s=max(0.0, batch.last_cpu - start_cpu),
        wall_s=max(0.0, batch.last_wall - start_wall),
    )


async def run_overlay_bench(
    nodes: int = 5,
    messages: int = 500,
    *,
    warmup: int = 50,
    rounds: int = 2,
    window: int | None = None,
    progress: ProgressCallback | None = None,
) -> OverlayBenchResult:
    """Measure both variants `rounds` times, alternating (bare, dmoa, bare, dmoa, ...).

    Each run starts a fresh full mesh of `nodes` real py-libp2p nodes in this process,
    waits for the GossipSub mesh, publishes `warmup` uncounted messages, then `messages`
    counted ones round-robin from every node, at most `window` (default: `nodes`) in flight.
    Latency runs from before sealing to receipt.
    """
    settings = BenchSettings(
        nodes=nodes,
        messages=messages,
        warmup=warmup,
        rounds=rounds,
        window=nodes if window is None else window,
        payload_bytes=envelope_bytes(),
    )
    runs = [
        await _run_variant(variant, round_, settings, progress)
        for round_ in range(1, rounds + 1)
        for variant in VARIANTS
    ]
    return OverlayBenchResult(settings=settings, runs=tuple(runs))
