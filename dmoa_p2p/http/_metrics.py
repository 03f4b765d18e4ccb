"""Prometheus metrics of one node: its state read at scrape time, and latency histograms."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dmoa_p2p.moa import DEFAULT_LAYERS, DEFAULT_PROPOSERS, Answer
from dmoa_p2p.node import Node, NodeSnapshot
from dmoa_p2p.wire import RejectReason

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("accepted", "degraded", "refused", "answered", "failed", "cancelled")
# LLM calls take from milliseconds (fake backend) to minutes (large models on a CPU)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 300, 600)
FINAL_LAYER = "final"


def _maybe(value: float | None) -> float:
    return math.nan if value is None else value


class NodeCollector(Collector):
    """Reads the node's snapshot at each scrape: queue, estimates, outcomes, peers."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        snapshot = self.node.snapshot()
        own = snapshot.own
        yield GaugeMetricFamily(
            "dmoa_queue_length", "Prompts waiting or in service", value=own.queue_length
        )
        yield GaugeMetricFamily(
            "dmoa_queue_capacity", "Prompts the queue holds at most", value=own.queue_capacity
        )
        yield GaugeMetricFamily(
            "dmoa_arrival_rate_per_second",
            "Estimated λ: this node's users' prompts per second, refused ones included "
            "(the last 64 prompts)",
            value=_maybe(own.arrival_rate),
        )
        yield GaugeMetricFamily(
            "dmoa_admitted_rate_per_second",
            "This node's users' prompts per second that admission let through",
            value=_maybe(own.admitted_rate),
        )
        yield GaugeMetricFamily(
            "dmoa_service_time_seconds",
            "Estimated α: mean service time of the local model (mean of the last 64 services)",
            value=_maybe(own.mean_service_s),
        )
        yield from _load(snapshot)
        prompts = CounterMetricFamily(
            "dmoa_prompts",
            "User prompts by outcome (admitted, refused, then answered, failed or cancelled)",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            prompts.add_metric([outcome], snapshot.prompts.get(outcome, 0))
        yield prompts
        inferences = CounterMetricFamily(
            "dmoa_inferences", "LLM calls served by this node's queue", labels=["result"]
        )
        inferences.add_metric(["served"], snapshot.served)
        inferences.add_metric(["failed"], snapshot.failed)
        yield inferences
        yield from _messages(snapshot)
        yield from _peers(snapshot)
        refusals = CounterMetricFamily(
            "dmoa_refusals",
            "What this node refused besides rejected messages: direct messages (too large, "
            "rejected), presences it did not keep, dials it did not make, peers' tasks",
            labels=["cause"],
        )
        for cause, count in snapshot.refusals.items():
            refusals.add_metric([cause], count)
        yield refusals


def _load(snapshot: NodeSnapshot) -> Iterator[Metric]:
    load = snapshot.swarm_load
    yield GaugeMetricFamily(
        "dmoa_rho",
        "Projected utilisation of the busiest device for model 'dmoa' "
        f"(M={DEFAULT_LAYERS}, k={DEFAULT_PROPOSERS})",
        value=_maybe(load.rho),
    )
    yield GaugeMetricFamily(
        "dmoa_rho_threshold",
        "ρ at which admission refuses (ρ_max), else the stability bound 1",
        value=load.rho_threshold,
    )
    yield GaugeMetricFamily(
        "dmoa_max_stable_rate_per_second",
        "Per-user λ at which the slowest device reaches ρ = 1 for model 'dmoa'",
        value=_maybe(load.max_stable_rate),
    )

def _messages(snapshot: NodeSnapshot) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "dmoa_messages_accepted",
        "Signed messages that passed every check",
        value=snapshot.messages_accepted,
    )
    rejected = CounterMetricFamily(
        "dmoa_messages_rejected", "Messages dropped by the receive gate", labels=["reason"]
    )
    for reason in RejectReason:
        rejected.add_metric([str(reason)], snapshot.messages_rejected.get(str(reason), 0))
    yield rejected


def _peers(snapshot: NodeSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "dmoa_peers", "Peers in this node's view (seen within the expiry window)",
        value=len(snapshot.peers),
    )
    yield GaugeMetricFamily(
        "dmoa_peers_pending", "Peers heard of through presence but not reached yet",
        value=snapshot.pending_peers,
    )
    yield GaugeMetricFamily(
        "dmoa_peers_connected", "Peers with an open libp2p connection",
        value=len(snapshot.connected_peers),
    )
    events = CounterMetricFamily(
        "dmoa_peer_events", "Peers that joined or expired from the view", labels=["event"]
    )
    events.add_metric(["joined"], snapshot.events.get("peer_joined", 0))
    events.add_metric(["expired"], snapshot.events.get("peer_expired", 0))
    yield events


class NodeMetrics:
    """One node's registry: several nodes can share a process without sharing metrics."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(node))
        self.layer_latency = Histogram(
            "dmoa_layer_latency_seconds",
            "Latency of each layer of this node's queries; 'final' is the aggregation",
            ["layer"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.query_latency = Histogram(
            "dmoa_query_latency_seconds",
            "End-to-end latency of this node's queries",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.http_requests = Counter(
            "dmoa_http_requests", "HTTP API requests by route and status", ["route", "status"],
            registry=self.registry,
        )

    def observe(self, answer: Answer) -> None:
        """Record a finished query's latencies (a Node answer listener)."""
        trace = answer.trace
        for layer in trace.layers:
            self.layer_latency.labels(str(layer.layer)).observe(layer.elapsed_s)
        for call in trace.calls:
            if call.role == "aggregator":
                self.layer_latency.labels(FINAL_LAYER).observe(call.queue_wait_s + call.service_s)
        self.query_latency.observe(trace.total_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
