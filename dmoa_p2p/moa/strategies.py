"""Built-in strategies, and `plan_layers`, the helper every strategy can build on.

A strategy is created once per node (on the first query that names it) and kept while the
node runs, so state it keeps lasts across queries; it must not block (plan is synchronous).
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from collections.abc import Callable, Sequence

from dmoa_p2p import stability
from dmoa_p2p.moa._types import LayerPlan, PeerLoad, Plan, PromptMode, QueryRequest

# Draws `count` distinct peers (count <= len(peers)) for one layer.
Draw = Callable[[Sequence[PeerLoad], int, random.Random], list[PeerLoad]]


def uniform_draw(peers: Sequence[PeerLoad], count: int, rng: random.Random) -> list[PeerLoad]:
    """`count` distinct peers, uniformly at random (the paper's choice)."""
    return rng.sample(list(peers), count)


def plan_layers(
    request: QueryRequest,
    peers: Sequence[PeerLoad],
    rng: random.Random,
    draw: Draw = uniform_draw,
    *,
    raw_only: bool = False,
) -> Plan:
    """M layers of min(k, len(peers)) proposers, each layer drawn afresh with `draw` (as in
    the paper); layer 1 gets the raw prompt, later ones the augmented prompt unless
    `raw_only` (then the final aggregation sees every layer's proposals). The plan's notes
    say when fewer than k peers are known."""
    count = min(request.proposers, len(peers))
    layers = []
    for index in range(request.layers):
        mode: PromptMode = "raw" if raw_only or index == 0 else "augmented"
        chosen = draw(peers, count, rng)
        layers.append(LayerPlan(tuple(p.peer_id for p in chosen), mode))
    notes: tuple[str, ...] = ()
    if request.layers > 0 and request.proposers > len(peers):
        notes = (f"asked for k={request.proposers} proposers, only {len(peers)} peers known",)
    return Plan(tuple(layers), aggregate_all_layers=raw_only, notes=notes)


class LocalStrategy:
    """`local`: M = 0, the node's own model answers alone (the paper's (0, 0) baseline)."""

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        if request.layers == 0:
            return Plan(layers=())
        note = f"strategy 'local' answers alone: asked for M={request.layers} layers, using M=0"
        return Plan(layers=(), notes=(note,))


class AugmentedStrategy:
    """`augmented`, the paper's scheme: layer 1 gets the raw prompt, later layers the augmented one.

    Each layer draws k proposers uniformly at random without replacement from the known
    peers, independently of the other layers.
    """

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        return plan_layers(request, peers, rng)


class RawStrategy:
    """`raw`: every layer answers the raw prompt; all layers' proposals are combined at the end."""

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        return plan_layers(request, peers, rng, raw_only=True)


def _service_times(peers: Sequence[PeerLoad]) -> list[float]:
    """Mean service times; unknown (or nonsensical) ones get 1 / the median known rate, else 1."""
    known = [
        1.0 / p.mean_service_s
        for p in peers
        if p.mean_service_s is not None and math.isfinite(p.mean_service_s) and p.mean_service_s > 0
    ]
    fallback = 1.0 / statistics.median(known) if known else 1.0
    times = []
    for p in peers:
        s = p.mean_service_s
        times.append(s if s is not None and math.isfinite(s) and s > 0 else fallback)
    return times


def spare_capacity_weights(peers: Sequence[PeerLoad], layers: int) -> list[float]:
    """`stability.spare_capacity_weights` from the peers' presence; no rate known counts as 0.

    A peer's own load is the rate of prompts it admitted (what it offered, from peers that
    do not say), and each peer is assumed to run the same M as this query.
    """
    rates = [
        (p.admitted_rate if p.admitted_rate is not None else p.arrival_rate) or 0.0 for p in peers
    ]
    return stability.spare_capacity_weights(rates, _service_times(peers), layers)


def _systematic(
    weights: Sequence[float], peers: Sequence[PeerLoad], count: int, rng: random.Random
) -> list[PeerLoad]:
    """Systematic PPS sampling (Madow): peer i is drawn with probability exactly π_i, never twice.

    π = `stability.capped_shares(weights, count)`, laid end to end on [0, count) in a shuffled
    order (so which peers tend to be drawn together is not fixed by the list's order); the
    peers whose intervals hold u, u+1, …, u+count−1 are drawn, u uniform in [0, 1). No π_i
    exceeds 1, so no interval holds two points.
    """
    shares = stability.capped_shares(weights, count)
    order = list(range(len(peers)))
    rng.shuffle(order)
    u = rng.random()
    chosen: list[PeerLoad] = []
    edge = 0.0
    for position, i in enumerate(order):
        edge += shares[i]
        wanted = count - len(chosen)
        # the second test only decides when rounding leaves the last point past the end
        if wanted > 0 and (edge > u + len(chosen) or len(order) - position <= wanted):
            chosen.append(peers[i])
    return chosen


class CapacityStrategy:
    """`capacity`: like `augmented`, but proposers are drawn in proportion to spare capacity.

    A peer's weight is its service rate 1/α_i less its own users' work λ_i·(M+1), floored at
    `stability.SPARE_FLOOR`·(1/α_i) (see `stability.spare_capacity_weights`); each layer
    draws k peers by systematic sampling, so a peer's chance is exactly its capped share
    and `stability.selection_probabilities` predicts the load exactly.

    Why spare capacity: device i then gets helper work in proportion to what its own users
    leave free, so ρ_i = 1 − (1 − own_i)(1 − g) with g about the same for every device: at
    the stability boundary all devices reach ρ = 1 together, and the limit moves from
    Remark 1's α_max bound towards the pooled rate Σ 1/α_i. Not quite where a device's own
    users nearly saturate it: its M+1 inferences per prompt stay on it (so λ < 1/(α_i·(M+1))
    whatever the choice), and at the floor it still gets a little helper work.
    Queue lengths are not used: a full queue refuses tasks and the engine asks another
    peer, and a queue-dependent weight would tie the limit to the queue capacity.
    """

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        draw = functools.partial(_systematic, spare_capacity_weights(peers, request.layers))
        return plan_layers(request, peers, rng, draw)
