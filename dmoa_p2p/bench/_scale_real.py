"""`bench scale` on real swarms: `dmoa-p2p node` processes on 127.0.0.1, idle, fake backend."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from dmoa_p2p.bench._overlay import BenchError, ProgressCallback
from dmoa_p2p.bench._scale_results import ScaleRow, median, per_node, tv_distance
from dmoa_p2p.swarm import ProcessSwarm, SwarmError, open_process_swarm, swarm_dir

_TICKS = os.sysconf("SC_CLK_TCK")
_GRAFT_PENALTY = "GRAFT flood detected"  # py-libp2p's warning for a peer grafting too often
_POLL_S = 0.5


@attrs.frozen
class RealScaleSettings:
    nodes: int
    settle_s: float = 10.0  # after joining, before measuring: start-up work done
    window_s: float = 30.0
    join_timeout_s: float = 120.0
    # source tree the members run from (another version, to compare designs); None: this one
    member_pythonpath: str | None = None


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _traffic(status: dict[str, Any]) -> tuple[float, float, float]:
    """(messages sent + received, bytes sent, bytes received) of control traffic so far.

    A node without peer sampling (the old design) counts the presences its gate accepted
    and those it published; their bytes are not counted (0)."""
    sampling = status.get("sampling")
    if not sampling:
        events = status.get("events", {})
        return status["messages"]["accepted"] + events.get("presence_published", 0), 0.0, 0.0
    sent, received = sampling["sent"], sampling["received"]
    messages = sent.get("messages", 0) + received.get("messages", 0)
    return messages, sent.get("bytes", 0), received.get("bytes", 0)


def _view_tv(statuses: Sequence[dict[str, Any]], proposers: int = 3) -> float:
    """TV from uniform of every member drawing `proposers` among the peers it lists."""
    everyone = sorted(s["peer_id"] for s in statuses)
    mass: dict[str, float] = {}
    for status in statuses:
        peers = [p["peer_id"] for p in status["peers"]]
        for peer_id in peers:
            mass[peer_id] = mass.get(peer_id, 0.0) + min(proposers, len(peers)) / len(peers)
    return tv_distance(mass, everyone)


async def _join_time(swarm: ProcessSwarm, timeout_s: float) -> float:
    try:
        return await swarm.wait_converged(timeout_s)
    except SwarmError as exc:
        raise BenchError(f"{len(swarm.members)} nodes did not join: {exc}") from exc


async def _measure(
    settings: RealScaleSettings, base: Path, progress: ProgressCallback | None
) -> ScaleRow:
    report = progress or (lambda _stage, _done, _total: None)
    started = time.monotonic()
    logs = base / "logs"
    env = {"PYTHONPATH": settings.member_pythonpath} if settings.member_pythonpath else None
    report(f"starting {settings.nodes} nodes", 0, 1)
    async with open_process_swarm(
        settings.nodes,
        base,
        node_args=("--backend", "fake"),
        stderr_dir=logs,
        env=env,
    ) as swarm:
        report("joining", 0, 1)
        joined_s = await _join_time(swarm, settings.join_timeout_s)
        await trio.sleep(settings.settle_s)
        pids = [process.pid for process in swarm.processes]
        cpu_before = [_cpu_s(pid) for pid in pids]
        before = [_traffic(s) for s in await swarm.statuses()]
        tvs, connections = [], []
        window_start = trio.current_time()
        while (elapsed := trio.current_time() - window_start) < settings.window_s:
            report("measuring", int(elapsed), int(settings.window_s))
            await trio.sleep(_POLL_S * 4)
            statuses = await swarm.statuses()
            tvs.append(_view_tv(statuses))
            connections = [len(s["connected_peers"]) for s in statuses]
        span = trio.current_time() - window_start
        cpu = [(_cpu_s(pid) - was) / span for pid, was in zip(pids, cpu_before, strict=True)]
        after = [_traffic(s) for s in await swarm.statuses()]
    deltas = [
        [(b - a) / span for a, b in zip(x, y, strict=True)]
        for x, y in zip(before, after, strict=True)
    ]
    penalties = sum(
        path.read_text(errors="replace").count(_GRAFT_PENALTY) for path in logs.iterdir()
    )
    return ScaleRow(
        kind="real",
        nodes=settings.nodes,
        window_s=span,
        **per_node(deltas, connections),
        idle_cpu=median(cpu),
        max_idle_cpu=max(cpu),
        joined_s=joined_s,
        join_drawn_s=(),
        joiners_never_drawn=0,
        crash_dropped_s=(),
        tv=median(tvs),
        graft_penalties=penalties,
        wall_s=time.monotonic() - started,
    )


async def run_real_scale(
    settings: RealScaleSettings, progress: ProgressCallback | None = None
) -> ScaleRow:
    """One real swarm of idle node processes, started, joined, measured and stopped."""
    with swarm_dir(None, prefix="dmoa-scale-") as base:
        return await _measure(settings, base, progress)
