"""`bench overlay`: our signed-envelope layer against bare py-libp2p on a localhost swarm."""

from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import trio

from dmoa_p2p.bench._results import BenchSettings, OverlayBenchResult, RunMetrics
from dmoa_p2p.bench._traffic import (
    BARE,
    DMOA,
    VARIANTS,
    BareTraffic,
    DmoaTraffic,
    Traffic,
    bench_presence,
    envelope_bytes,
)
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, OverlayMessage, TopicValidator, open_libp2p_overlay

LOCAL = ("/ip4/127.0.0.1/tcp/0",)
TOPIC_PREFIX = "dmoa-p2p/bench/overlay/"
# how long to wait for stragglers once a block is published, and for the mesh to form
DRAIN_TIMEOUT_S = 30.0
MESH_TIMEOUT_S = 20.0
_PROBE_WAIT_S = 0.5
# lets duplicates GossipSub still forwards after a block's last delivery settle before the next
_SETTLE_S = 0.1

# (what is running, messages published so far, messages to publish in all)
ProgressCallback = Callable[[str, int, int], None]


class BenchError(Exception):
    """The swarm could not be set up (no mesh formed in time)."""


class _Batch:
    """Send times and receipts of one block of messages, on the process's clocks."""

    def __init__(self, messages: int, receivers: int, window: int) -> None:
        self.expected = messages * receivers
        self.receivers = receivers
        self.sent: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.complete = trio.Event()
        # a permit per message in flight: released once every receiver has it
        self.in_flight = trio.Semaphore(window)
        self._missing: dict[bytes, int] = {}
        self.last_wall = 0.0
        self.last_cpu = 0.0
        if not self.expected:
            self.complete.set()  # an empty block (no warm-up) is done at once

    def sending(self, message_id: bytes, at: float) -> None:
        self.sent[message_id] = at
        self._missing[message_id] = self.receivers

    def record(self, message_id: bytes) -> None:
        sent = self.sent.get(message_id)
        if sent is None:
            return  # from an earlier block
        now = time.perf_counter()
        self.latencies.append(now - sent)
        # the block ends at its last receipt, even if some never arrive
        self.last_wall = now
        self.last_cpu = time.process_time()
        self._missing[message_id] -= 1
        if not self._missing[message_id]:
            del self._missing[message_id]
            self.in_flight.release()
        if len(self.latencies) == self.expected:
            self.complete.set()


class _Progress:
    """Counts publishes across the whole benchmark for one progress bar."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self.total = total
        self.done = 0
        self.label = "starting"

    def published(self) -> None:
        self.done += 1
        if self._callback is not None:
            self._callback(self.label, self.done, self.total)


class _Lane:
    """One variant's topic on the shared swarm: its traffic and the block in progress."""

    def __init__(self, topic: str, overlays: Sequence[Overlay], traffic: Traffic) -> None:
        self.topic = topic
        self.overlays = list(overlays)
        self.traffic = traffic
        self.batch = self._new_batch(0, 1)
        # thread CPU time spent in the variant's own code (make, validator, message_id)
        self.layer_cpu_s = 0.0

    def _new_batch(self, messages: int, window: int) -> _Batch:
        return _Batch(messages, len(self.overlays) - 1, window)

    def validator(self, node: int) -> TopicValidator:
        """The variant's validator for `node`, its CPU time counted as the layer's."""
        validate = self.traffic.validator(node)

        def timed(publisher: str, data: bytes) -> bool:
            start = time.thread_time()
            try:
                return validate(publisher, data)
            finally:
                self.layer_cpu_s += time.thread_time() - start

        return timed

    async def receive(self, node: int, channel: trio.abc.ReceiveChannel[OverlayMessage]) -> None:
        own = self.overlays[node].peer_id
        async for message in channel:
            start = time.thread_time()
            message_id = self.traffic.message_id(message.data)
            self.layer_cpu_s += time.thread_time() - start
            # the own copy is processed like any other but not counted as a delivery
            if message_id is not None and message.publisher != own:
                self.batch.record(message_id)

    async def publish(self, node: int) -> None:
        sent, start = time.perf_counter(), time.thread_time()
        # latency counts from before sealing: that is part of the cost of sending
        message_id, data = self.traffic.make(node)
        self.layer_cpu_s += time.thread_time() - start
        self.batch.sending(message_id, sent)
        await self.overlays[node].publish(self.topic, data)

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

    async def run_block(self, messages: int, window: int, progress: _Progress) -> _Batch:
        """Publish round-robin from every node, at most `window` messages in flight."""
        batch = self.batch = self._new_batch(messages, window)
        for index in range(messages):
            with trio.move_on_after(DRAIN_TIMEOUT_S) as stalled:
                await batch.in_flight.acquire()
            if stalled.cancelled_caught:
                break  # messages in flight were lost: report what arrived
            await self.publish(index % len(self.overlays))
            progress.published()
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            await batch.complete.wait()
        return batch


def _traffic(
    variant: str, identities: Sequence[NodeIdentity], overlays: Sequence[Overlay], size: int
) -> Traffic:
    if variant == DMOA:
        presences = [
            bench_presence(i, o.listen_addrs) for i, o in zip(identities, overlays, strict=True)
        ]
        return DmoaTraffic(identities, presences)
    return BareTraffic(size)


@contextlib.asynccontextmanager
async def _open_swarm(nodes: int, payload_bytes: int) -> AsyncIterator[dict[str, _Lane]]:
    """A full mesh of `nodes` overlays with one topic (lane) per variant, meshes formed."""
    identities = [NodeIdentity.generate() for _ in range(nodes)]
    async with contextlib.AsyncExitStack() as stack:
        overlays = [
            await stack.enter_async_context(open_libp2p_overlay(identity, LOCAL))
            for identity in identities
        ]
        for later, earlier in itertools.combinations(reversed(overlays), 2):
            await later.connect(earlier.listen_addrs[0])
        lanes = {
            v: _Lane(TOPIC_PREFIX + v, overlays, _traffic(v, identities, overlays, payload_bytes))
            for v in VARIANTS
        }
        async with trio.open_nursery() as nursery:
            for lane, (node, overlay) in itertools.product(lanes.values(), enumerate(overlays)):
                channel = await overlay.subscribe(lane.topic, lane.validator(node))
                nursery.start_soon(lane.receive, node, channel)
            for lane in lanes.values():
                await lane.await_mesh()
            try:
                yield lanes
            finally:
                nursery.cancel_scope.cancel()


def _schedule(settings: BenchSettings) -> Iterator[tuple[int, str, int]]:
    """(round, variant, messages) per block: ABBA order, so a slow drift hits both alike."""
    per_round, extra = divmod(settings.messages, settings.rounds)
    for round_ in range(1, settings.rounds + 1):
        order = VARIANTS if round_ % 2 else VARIANTS[::-1]
        for variant in order:
            yield round_, variant, per_round + (1 if round_ <= extra else 0)


async def _measure_block(
    lane: _Lane, round_: int, messages: int, settings: BenchSettings, progress: _Progress
) -> RunMetrics:
    progress.label = f"{lane.traffic.name} round {round_}/{settings.rounds}"
    await trio.sleep(_SETTLE_S)
    gc.collect()  # earlier garbage must not be collected on this block's time
    start_wall, start_cpu, start_layer = time.perf_counter(), time.process_time(), lane.layer_cpu_s
    batch = await lane.run_block(messages, settings.window, progress)
    return RunMetrics.measure(
        lane.traffic.name,
        round_,
        batch.expected,
        batch.latencies,
        cpu_s=max(0.0, batch.last_cpu - start_cpu),
        wall_s=max(0.0, batch.last_wall - start_wall),
        layer_cpu_s=lane.layer_cpu_s - start_layer,
    )


async def run_overlay_bench(
    nodes: int = 5,
    messages: int = 500,
    *,
    warmup: int = 50,
    rounds: int = 10,
    window: int | None = None,
    progress: ProgressCallback | None = None,
) -> OverlayBenchResult:
    """Measure bare py-libp2p and our layer on one localhost swarm, alternating blocks.

    `nodes` real py-libp2p nodes run in this process, fully connected, with a topic per
    variant. After the meshes form and `warmup` uncounted messages per variant, each
    variant publishes `messages` counted messages in `rounds` blocks (order bare, dmoa,
    dmoa, bare, ...), round-robin from every node with at most `window` (default: `nodes`)
    in flight. Latency runs from before sealing to receipt.
    """
    settings = BenchSettings(
        nodes=nodes,
        messages=messages,
        warmup=warmup,
        rounds=rounds,
        window=nodes if window is None else window,
        payload_bytes=envelope_bytes(),
    )
    counter = _Progress(progress, 2 * (warmup + messages))
    runs: list[RunMetrics] = []
    async with _open_swarm(nodes, settings.payload_bytes) as lanes:
        for variant in (BARE, DMOA):
            counter.label = f"{variant} warm-up"
            await lanes[variant].run_block(warmup, settings.window, counter)
        for round_, variant, count in _schedule(settings):
            runs.append(await _measure_block(lanes[variant], round_, count, settings, counter))
    return OverlayBenchResult(settings=settings, runs=tuple(runs))
