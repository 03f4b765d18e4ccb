"""`bench scale` on virtual swarms: the real node code, thousands of nodes, the in-memory
overlay and a virtual clock, with churn."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import attrs
import trio
import trio.testing

from dmoa_p2p.bench._overlay import ProgressCallback
from dmoa_p2p.bench._scale_results import ScaleRow, median, per_node, tv_distance
from dmoa_p2p.logs import events_hushed
from dmoa_p2p.node import Node
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.swarm import dial_addr
from dmoa_p2p.testing import memory_node, seeded_identity

LATENCY_S = 0.005  # one way, per message


@attrs.frozen
class VirtualScaleSettings:
    nodes: int
    warmup_s: float = 30.0  # virtual seconds before measuring
    window_s: float = 120.0
    churn_per_min: float = 0.01  # of the nodes, crashing (and as many joining) per minute
    proposers: int = 3  # drawn by every live node once per `draw_every_s`
    draw_every_s: float = 1.0
    seed: int = 1


@attrs.define
class _Member:
    node: Node
    scope: trio.CancelScope
    done: trio.Event


class _Swarm:
    """Members started and crashed under the virtual clock, in one nursery."""

    def __init__(self, nursery: trio.Nursery, base: Path, seed: int) -> None:
        self.network = MemoryNetwork(latency_s=LATENCY_S)
        self.nursery = nursery
        self.base = base
        self.seed = seed
        self.rng = random.Random(f"dmoa-scale/{seed}")
        self.live: dict[str, _Member] = {}
        self.started = 0

    async def join(self) -> str:
        """Start one node, bootstrapping from a random live one."""
        index = self.started
        self.started += 1
        bootstrap: tuple[str, ...] = ()
        if self.live:
            contact = self.live[self.rng.choice(sorted(self.live))].node
            bootstrap = (dial_addr(contact.listen_addrs),)
        member: _Member = await self.nursery.start(self._run, index, bootstrap)
        self.live[member.node.peer_id] = member
        return member.node.peer_id

    async def crash(self) -> str:
        victim = self.rng.choice(sorted(self.live))
        member = self.live.pop(victim)
        member.scope.cancel()
        await member.done.wait()
        return victim

    async def _run(
        self,
        index: int,
        bootstrap: tuple[str, ...],
        *,
        task_status: trio.TaskStatus[_Member] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with memory_node(
                    self.network,
                    self.base / str(index),
                    bootstrap,
                    identity=seeded_identity(self.seed, index),
                    rng=random.Random(f"{self.seed}/{index}"),
                ) as node:
                    task_status.started(_Member(node, scope, done))
                    await trio.sleep_forever()
        finally:
            done.set()


@attrs.define
class _Window:
    """Draws, joins and crashes seen while measuring."""

    proposers: int
    rng: random.Random
    joined: dict[str, float] = attrs.Factory(dict)
    crashed: dict[str, float] = attrs.Factory(dict)
    first_drawn: dict[str, float] = attrs.Factory(dict)
    last_drawn: dict[str, float] = attrs.Factory(dict)
    tvs: list[float] = attrs.Factory(list)

    def draw(self, live: dict[str, _Member], now: float) -> None:
        """Every live node draws its proposers once; the exact choice gives the TV."""
        mass: dict[str, float] = {}
        for member in live.values():
            eligible = sorted(r.peer_id for r in member.node.records())
            if not eligible:
                continue
            taken = min(self.proposers, len(eligible))
            for peer_id in eligible:
                mass[peer_id] = mass.get(peer_id, 0.0) + taken / len(eligible)
            for peer_id in self.rng.sample(eligible, taken):
                self.first_drawn.setdefault(peer_id, now)
                self.last_drawn[peer_id] = now
        self.tvs.append(tv_distance(mass, sorted(live)))


async def _measure(
    settings: VirtualScaleSettings, base: Path, progress: ProgressCallback | None
) -> ScaleRow:
    started = time.monotonic()
    report = progress or (lambda _stage, _done, _total: None)
    async with trio.open_nursery() as nursery:
        swarm = _Swarm(nursery, base, settings.seed)
        for i in range(settings.nodes):
            await swarm.join()
            if i % 50 == 0:
                report("starting nodes", i, settings.nodes)
        await trio.sleep(settings.warmup_s)
        steady = set(swarm.live)
        before = {pid: _traffic(m.node) for pid, m in swarm.live.items()}
        window = _Window(settings.proposers, random.Random(settings.seed))
        churn_every = 60.0 / max(settings.churn_per_min * settings.nodes, 1e-9)
        next_churn = trio.current_time() + churn_every
        start = trio.current_time()
        while (now := trio.current_time()) - start < settings.window_s:
            if now >= next_churn:
                next_churn += churn_every
                gone = await swarm.crash()
                window.crashed[gone] = now
                steady.discard(gone)
                window.joined[await swarm.join()] = now
            window.draw(swarm.live, now)
            report("measuring", int(now - start), int(settings.window_s))
            await trio.sleep(settings.draw_every_s)
        row = _row(settings, swarm, window, steady, before, time.monotonic() - started)
        nursery.cancel_scope.cancel()
    return row


def _traffic(node: Node) -> tuple[int, int, int]:
    sent, received = node.sampling.sent, node.sampling.received
    return sent["messages"] + received["messages"], sent["bytes"], received["bytes"]


def _row(
    settings: VirtualScaleSettings,
    swarm: _Swarm,
    window: _Window,
    steady: set[str],
    before: dict[str, tuple[int, int, int]],
    wall_s: float,
) -> ScaleRow:
    span = settings.window_s
    deltas = [
        [(b - a) / span for a, b in zip(before[p], _traffic(swarm.live[p].node), strict=True)]
        for p in sorted(steady)
    ]
    connections = [len(m.node.overlay.connected_peers()) for m in swarm.live.values()]
    end = trio.current_time()
    first = window.first_drawn
    drawn = {p: first[p] - t for p, t in window.joined.items() if p in first}
    return ScaleRow(
        kind="virtual",
        nodes=settings.nodes,
        window_s=span,
        **per_node(deltas, connections),
        idle_cpu=None,
        max_idle_cpu=None,
        joined_s=None,
        join_drawn_s=tuple(sorted(drawn.values())),
        # joiners given the full DRAWN_WITHIN_S before the end, yet never drawn
        joiners_never_drawn=sum(
            p not in window.first_drawn and t <= end - 10.0 for p, t in window.joined.items()
        ),
        crash_dropped_s=tuple(
            sorted(max(0.0, window.last_drawn.get(p, t) - t) for p, t in window.crashed.items())
        ),
        tv=median(window.tvs),
        graft_penalties=None,
        wall_s=wall_s,
    )


def run_virtual_scale(
    settings: VirtualScaleSettings, progress: ProgressCallback | None = None
) -> ScaleRow:
    """One virtual swarm, in a trio run of its own under a MockClock (blocks; call it from a
    thread, e.g. `trio.to_thread.run_sync`)."""
    with events_hushed(), tempfile.TemporaryDirectory(prefix="dmoa-scale-") as tmp:
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(_measure, settings, Path(tmp), progress, clock=clock)
