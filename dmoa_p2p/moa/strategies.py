"""Built-in strategies: how many layers, and which peers propose in each layer."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence

from dmoa_p2p.moa._types import LayerPlan, PeerLoad, Plan, PromptMode, QueryRequest

# Draws `count` distinct peers (count <= len(peers)) for one layer.
Draw = Callable[[Sequence[PeerLoad], int, random.Random], list[PeerLoad]]

# A full queue still leaves a peer this fraction of its weight: rarely chosen, never excluded,
# so a peer whose presence is stale or whose queue just drained still gets some work.
BUSY_WEIGHT_FLOOR = 0.05


def _uniform(peers: Sequence[PeerLoad], count: int, rng: random.Random) -> list[PeerLoad]:
    return rng.sample(list(peers), count)


def _plan(
    request: QueryRequest,
    peers: Sequence[PeerLoad],
    rng: random.Random,
    draw: Draw,
    *,
    raw_only: bool,
) -> Plan:
    """M layers of min(k, len(peers)) proposers, each layer drawn afresh (as in the paper)."""
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
        return _plan(request, peers, rng, _uniform, raw_only=False)


class RawStrategy:
    """`raw`: every layer answers the raw prompt; all layers' proposals are combined at the end."""

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        return _plan(request, peers, rng, _uniform, raw_only=True)


def _service_rates(peers: Sequence[PeerLoad]) -> list[float]:
    """1 / mean service time; unknown (or nonsensical) times get the median known rate, else 1."""
    known = [
        1.0 / p.mean_service_s
        for p in peers
        if p.mean_service_s is not None and math.isfinite(p.mean_service_s) and p.mean_service_s > 0
    ]
    fallback = statistics.median(known) if known else 1.0
    rates = []
    for p in peers:
        s = p.mean_service_s
        rates.append(1.0 / s if s is not None and math.isfinite(s) and s > 0 else fallback)
    return rates


def spare_capacity_weights(peers: Sequence[PeerLoad]) -> list[float]:
    """weight_i = service_rate_i · max(floor, 1 - queue_length_i / queue_capacity_i)."""
    weights = []
    for peer, rate in zip(peers, _service_rates(peers), strict=True):
        free = 1.0 - peer.queue_length / max(1, peer.queue_capacity)
        weights.append(rate * max(BUSY_WEIGHT_FLOOR, free))
    return weights


def _by_spare_capacity(peers: Sequence[PeerLoad], count: int, rng: random.Random) -> list[PeerLoad]:
    """Weighted sampling without replacement (Efraimidis-Spirakis A-Res).

    Each peer gets the key u^(1/w) with u uniform in (0, 1]; the `count` largest keys win.
    Compared as log(u)/w, which orders the same and does not underflow for small w.
    Sorted by key then by position, so a seed gives one answer.
    """
    keyed = []
    for position, (peer, weight) in enumerate(
        zip(peers, spare_capacity_weights(peers), strict=True)
    ):
        u = 1.0 - rng.random()  # (0, 1]: log(u) is finite
        keyed.append((math.log(u) / weight, -position, peer))
    keyed.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [peer for _, _, peer in keyed[:count]]


class CapacityStrategy:
    """`capacity`: like `augmented`, but proposers are drawn in proportion to spare capacity.

    Weight of a peer = service rate (1 / mean service time) x free fraction of its queue
    (floored at BUSY_WEIGHT_FLOOR). Draws are without replacement; with k = 1 a peer's
    chance is exactly its share of the total weight, with k > 1 the chances are compressed
    toward uniform (no peer can be picked twice in one layer).

    Why this widens the stability region: under uniform selection every device gets the
    same share of helper work, so the slowest one saturates first and Remark 1 bounds the
    whole system by alpha_max. Drawing in proportion to 1/alpha_i gives each device work
    in proportion to the rate it can serve, so the helper load no longer piles up on the
    slowest device; the limit moves from n/alpha_max towards sum_i 1/alpha_i (the pooled
    service rate). The queue term steers work away from devices that are momentarily backed up.
    The origin's own inferences (its layer answers and the final aggregation) are not
    moved, so a slow device with busy users can still be the bottleneck.
    """

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        return _plan(request, peers, rng, _by_spare_capacity, raw_only=False)
