"""What `bench flood` is set to and what it measured: settings, phases, goals and their JSON."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio

from dmoa_p2p.bench._flood_peer import FloodCounts, FloodLimits
from dmoa_p2p.bench._moa import DEFAULT_MAX_TOKENS
from dmoa_p2p.moa import Trace
from dmoa_p2p.node import Node
from dmoa_p2p.simulate import percentile

TARGET_P50_RATIO = 1.3
SHARE_TOLERANCE = 0.05  # of the model's time: ±1 service of 0.2 s in a 4 s window
FlooderPlace = Literal["process", "in-process"]
SHARE_MEANS = (
    "model share: the victim's services of the flooder's tasks during phase B's timed queries "
    "(all its services but its own user's calls, from their traces) times the service time, "
    "over that window's length, i.e. the flooder's task rate over μ = 1/service time; the "
    "fair share is 1/n of μ with n = the swarm's nodes. Share of services: the same tasks "
    "over all the victim's services in the window (above 1/n whenever the model idles)"
)


@attrs.frozen
class FloodSettings:
    nodes: int = 4
    service_time_s: float = 0.2
    queries: int = 20  # per phase
    layers: int = 1
    proposers: int = 2
    max_tokens: int = DEFAULT_MAX_TOKENS
    flood_warmup_s: float = 5.0  # flooding before phase B's queries start: the burst passes
    flooder: FlooderPlace = "process"
    limits: FloodLimits = attrs.field(factory=FloodLimits)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class VictimCounters:
    at: float  # trio time
    served: int  # prompts its model served, all origins
    task_refusals: dict[str, int] | None  # peers' tasks refused, by cause (None: not counted)
    messages_rejected: dict[str, int]
    refusals: dict[str, int]
    events: dict[str, int]  # what the node noted (clock skew seen and reported, ...)
    live_peers: int


def victim_counters(victim: Node) -> VictimCounters:
    snapshot = victim.snapshot()
    refusals = getattr(victim.engine, "task_refusals", None)  # the fair-share limiter's
    return VictimCounters(
        at=trio.current_time(),
        served=snapshot.served,
        task_refusals=None if refusals is None else {str(k): int(v) for k, v in refusals.items()},
        messages_rejected=dict(snapshot.messages_rejected),
        refusals=dict(snapshot.refusals),
        events=dict(snapshot.events),
        live_peers=len(snapshot.peers),
    )


def gained(after: Mapping[str, int] | None, before: Mapping[str, int] | None) -> dict[str, int]:
    """The counts that grew from `before` to `after`, by how much."""
    after, before = after or {}, before or {}
    grown = {key: value - before.get(key, 0) for key, value in after.items()}
    return {key: n for key, n in sorted(grown.items()) if n}


@attrs.frozen
class QueryOutcome:
    latency_s: float
    aggregation_wait_s: float  # the victim's own model: queue wait of the final aggregation
    asked_flooder: bool  # the flooder was drawn as a proposer (it refuses at once)
    own_calls: int  # the victim's model served this query so many times (proposals, aggregation)

    @classmethod
    def of(cls, latency_s: float, trace: Trace, victim: str, flooder: str) -> QueryOutcome:
        own = [call for call in trace.calls if call.node == victim]
        waits = [call.queue_wait_s for call in own if call.role == "aggregator"]
        asked = any(flooder in (*layer.asked, *layer.replacements) for layer in trace.layers)
        return cls(latency_s, max(waits, default=0.0), asked, len(own))


@attrs.frozen
class PhaseResult:
    outcomes: tuple[QueryOutcome, ...]
    refused: dict[str, int]  # queries the victim refused, by cause
    before: VictimCounters
    after: VictimCounters

    @property
    def latencies(self) -> list[float]:
        return [outcome.latency_s for outcome in self.outcomes]

    @property
    def duration_s(self) -> float:
        return self.after.at - self.before.at

    @property
    def services(self) -> int:
        return self.after.served - self.before.served

    @property
    def flooder_services(self) -> int:
        """The victim's services not for its user's queries: only its user asks in the swarm,
        and the victim is no proposer of its own queries, so these are the flooder's tasks."""
        return self.services - sum(outcome.own_calls for outcome in self.outcomes)

    def latency(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)

    def to_json(self) -> dict[str, Any]:
        waits = [outcome.aggregation_wait_s for outcome in self.outcomes]
        return {
            "answered": len(self.outcomes),
            "refused": self.refused,
            "latency_s": {
                "p50": self.latency(0.5),
                "p90": self.latency(0.9),
                "min": min(self.latencies, default=math.nan),
                "max": max(self.latencies, default=math.nan),
            },
            "aggregation_queue_wait_s": {
                "median": statistics.median(waits) if waits else math.nan,
                "max": max(waits, default=math.nan),
            },
            "asked_flooder": sum(outcome.asked_flooder for outcome in self.outcomes),
            "duration_s": self.duration_s,
            "victim_services": self.services,
            "flooder_services": self.flooder_services,
            "victim_task_refusals": gained(self.after.task_refusals, self.before.task_refusals),
        }


@attrs.frozen
class FloodBenchResult:
    settings: FloodSettings
    quiet: PhaseResult  # phase A
    flooded: PhaseResult  # phase B's timed queries
    window_start: FloodCounts  # the flooder's counts as phase B's queries began
    window_end: FloodCounts  # ... and as they ended
    total: FloodCounts  # the whole flood (warm-up, queries, drain)
    flood_start: VictimCounters
    flood_end: VictimCounters

    @property
    def p50_ratio(self) -> float:
        return self.flooded.latency(0.5) / self.quiet.latency(0.5)

    @property
    def fair_share(self) -> float:
        return 1.0 / self.settings.nodes

    @property
    def model_share(self) -> float:
        """The flooder's share of the victim's model time during phase B's queries, counted
        at the victim (see `PhaseResult.flooder_services`; the service time is fixed)."""
        window_s = self.flooded.duration_s
        served_s = self.flooded.flooder_services * self.settings.service_time_s
        return served_s / window_s if window_s > 0 else math.nan

    @property
    def accounted(self) -> int:
        t = self.total
        return t.proposals + t.refusals + t.unacknowledged + t.unanswered + t.sending

    @property
    def passed(self) -> bool:
        return (
            self.p50_ratio <= TARGET_P50_RATIO
            and self.model_share <= self.fair_share + SHARE_TOLERANCE
        )

    def to_json(self) -> dict[str, Any]:
        window = self.window_end.minus(self.window_start)
        window_s = self.flooded.duration_s
        victim_services, flooder_services = self.flooded.services, self.flooded.flooder_services
        total_s = self.total.flood_s
        share_ok = self.model_share <= self.fair_share + SHARE_TOLERANCE
        return {
            "settings": self.settings.to_json(),
            "phases": {"no_flood": self.quiet.to_json(), "flood": self.flooded.to_json()},
            "latency_ratio": {
                "p50": self.p50_ratio,
                "p90": self.flooded.latency(0.9) / self.quiet.latency(0.9),
            },
            "flooder": {
                "window": {
                    **window,
                    "seconds": window_s,
                    "tasks_per_s": window["sent"] / window_s if window_s > 0 else math.nan,
                    "model_share": self.model_share,
                    "share_of_services": (
                        flooder_services / victim_services if victim_services else math.nan
                    ),
                    "victim_services": victim_services,
                    "flooder_services": flooder_services,
                    # from the proposals that reached the flooder: fewer when replies lag
                    "model_share_seen_by_flooder": (
                        window["served_s"] / window_s if window_s > 0 else math.nan
                    ),
                },
                "total": self.total.to_json(),
                "tasks_per_s": self.total.sent / total_s if total_s > 0 else math.nan,
                "shuffles_delivered_per_s": (
                    self.total.shuffles_delivered / total_s if total_s else 0.0
                ),
                "victim_task_refusals": gained(
                    self.flood_end.task_refusals, self.flood_start.task_refusals
                ),
                "victim_messages_rejected": gained(
                    self.flood_end.messages_rejected, self.flood_start.messages_rejected
                ),
                "victim_refusals": gained(self.flood_end.refusals, self.flood_start.refusals),
                "victim_events": gained(self.flood_end.events, self.flood_start.events),
                "victim_devices": self.flood_end.live_peers + 1,
            },
            "accounting": {
                "sent": self.total.sent,
                "accounted": self.accounted,
                "adds_up": self.total.sent == self.accounted,
                "means": "sent = proposals + refusals + unacknowledged + unanswered + sending",
            },
            "fair_share": self.fair_share,
            "share_tolerance": SHARE_TOLERANCE,
            "share_means": SHARE_MEANS,
            "fair_share_limiter": self.flood_end.task_refusals is not None,
            "goals": {
                "p50_ratio": {
                    "value": self.p50_ratio,
                    "target": TARGET_P50_RATIO,
                    "met": self.p50_ratio <= TARGET_P50_RATIO,
                },
                "flooder_share": {
                    "value": self.model_share,
                    "target": self.fair_share + SHARE_TOLERANCE,
                    "met": share_ok,
                },
            },
            "passed": self.passed,
        }
