"""`bench scale`'s figures: per-node cost and proposer choice, per swarm, and the goals."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import attrs

from dmoa_p2p.node import finite

TV_GOAL = 0.1  # total-variation distance of proposer choice from uniform, at n = 1000
DRAWN_WITHIN_S = 10.0  # a joiner drawn, a crashed node no longer drawn, at n = 1000
TRAFFIC_RATIO_GOAL = 1.2  # per-node control traffic, largest n over smallest
IDLE_CPU_GOAL = 0.04  # cores per node, real 32-node swarm (a third of the old 8-node figure)
JOINED_WITHIN_S = 10.0  # real 32-node swarm


@attrs.frozen
class ScaleRow:
    """One swarm: `kind` "real" (libp2p processes on 127.0.0.1) or "virtual" (the real node
    code on the in-memory overlay under a virtual clock); per-node figures are medians over
    the nodes live through the measured window unless said otherwise."""

    kind: str
    nodes: int
    window_s: float  # measured seconds (virtual seconds for virtual swarms)
    messages_per_s: float  # shuffle messages sent plus received, per node
    bytes_sent_per_s: float
    bytes_received_per_s: float
    connections: float  # median per node at the end
    max_connections: int
    idle_cpu: float | None  # cores per node (real swarms only), median
    max_idle_cpu: float | None
    joined_s: float | None  # start of the last member to a converged swarm (real)
    join_drawn_s: tuple[float, ...]  # per joiner: join to first drawn as a proposer
    joiners_never_drawn: int
    crash_dropped_s: tuple[float, ...]  # per crashed node: crash to last drawn
    tv: float | None  # TV distance of the choice from uniform over live nodes, mean
    graft_penalties: int | None  # py-libp2p "GRAFT flood" warnings (real swarms)
    wall_s: float

    @property
    def control_bytes_per_s(self) -> float:
        return self.bytes_sent_per_s + self.bytes_received_per_s

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["control_bytes_per_s"] = self.control_bytes_per_s
        data["join_drawn_max_s"] = max(self.join_drawn_s, default=None)
        data["crash_dropped_max_s"] = max(self.crash_dropped_s, default=None)
        rendered: dict[str, Any] = finite(data)
        return rendered


@attrs.frozen
class ScaleResult:
    rows: tuple[ScaleRow, ...]
    settings: Mapping[str, Any]

    def goals(self) -> dict[str, dict[str, Any]]:
        """Each goal of the issue with its measured value; `met` None when not measured."""
        goals: dict[str, dict[str, Any]] = {}
        for kind in ("real", "virtual"):
            rows = sorted((r for r in self.rows if r.kind == kind), key=lambda r: r.nodes)
            if len(rows) >= 2 and rows[0].control_bytes_per_s > 0:
                ratio = rows[-1].control_bytes_per_s / rows[0].control_bytes_per_s
                goals[f"{kind}_traffic_ratio"] = _goal(ratio, ratio <= TRAFFIC_RATIO_GOAL)
        at_1000 = next((r for r in self.rows if r.kind == "virtual" and r.nodes == 1000), None)
        if at_1000 is not None:
            tv = at_1000.tv
            goals["tv_at_1000"] = _goal(tv, tv is not None and tv <= TV_GOAL)
            drawn = max(at_1000.join_drawn_s, default=math.inf)
            ok = drawn <= DRAWN_WITHIN_S and at_1000.joiners_never_drawn == 0
            goals["joiner_drawn_at_1000"] = _goal(drawn, ok)
            dropped = max(at_1000.crash_dropped_s, default=0.0)
            goals["crashed_dropped_at_1000"] = _goal(dropped, dropped <= DRAWN_WITHIN_S)
        real_32 = next((r for r in self.rows if r.kind == "real" and r.nodes == 32), None)
        if real_32 is not None:
            joined = real_32.joined_s
            in_time = joined is not None and joined <= JOINED_WITHIN_S
            goals["real_32_joined"] = _goal(joined, in_time)
            goals["real_32_no_graft_penalty"] = _goal(
                real_32.graft_penalties, real_32.graft_penalties == 0
            )
            cpu = real_32.idle_cpu
            goals["real_32_idle_cpu"] = _goal(cpu, cpu is not None and cpu <= IDLE_CPU_GOAL)
        return goals

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "rows": [row.to_json() for row in self.rows],
            "goals": finite(self.goals()),
        }


def _goal(value: float | None, met: bool) -> dict[str, Any]:
    return {"value": value, "met": met}


class PerNode(TypedDict):
    messages_per_s: float
    bytes_sent_per_s: float
    bytes_received_per_s: float
    connections: float
    max_connections: int


def per_node(traffic: Sequence[Sequence[float]], connections: Sequence[int]) -> PerNode:
    """ScaleRow's traffic and connection fields: per-node (messages, bytes sent, bytes
    received) per second and connection counts, as medians (and the most connections)."""
    return {
        "messages_per_s": median([t[0] for t in traffic]),
        "bytes_sent_per_s": median([t[1] for t in traffic]),
        "bytes_received_per_s": median([t[2] for t in traffic]),
        "connections": median([float(c) for c in connections]),
        "max_connections": max(connections, default=0),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def tv_distance(mass: Mapping[str, float], support: Sequence[str]) -> float:
    """Total-variation distance between `mass` (normalised here) and uniform over `support`."""
    total = sum(mass.values())
    if total <= 0 or not support:
        return math.nan
    uniform = 1.0 / len(support)
    keys = set(mass) | set(support)
    inside = set(support)
    return 0.5 * sum(
        abs(mass.get(key, 0.0) / total - (uniform if key in inside else 0.0)) for key in keys
    )


def rows_from_json(data: Mapping[str, Any]) -> tuple[ScaleRow, ...]:
    """The rows of a saved `bench scale --json` report (e.g. a baseline to plot against)."""
    names = {field.name for field in attrs.fields(ScaleRow)}
    rows = []
    for row in data.get("rows", []):
        values = {key: value for key, value in row.items() if key in names}
        for key in ("join_drawn_s", "crash_dropped_s"):
            values[key] = tuple(values.get(key) or ())
        rows.append(ScaleRow(**values))
    return tuple(rows)
