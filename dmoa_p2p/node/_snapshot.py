"""One snapshot of a node's state: what presence, /status, /metrics, `peers` and admission read."""

from __future__ import annotations

import math
from typing import Any

import attrs

from dmoa_p2p import stability
from dmoa_p2p.admission import OperatingPoint
from dmoa_p2p.moa import DEFAULT_LAYERS, DEFAULT_PROPOSERS, PeerLoad
from dmoa_p2p.overlay import Reachability
from dmoa_p2p.wire import Presence, limits

STABILITY_BOUND = 1.0  # Theorem 1: queues stay bounded while ρ < 1


def load_of(presence: Presence) -> PeerLoad:
    """A peer's load as its presence advertises it."""
    return PeerLoad(
        presence.peer_id,
        presence.mean_service_s,
        presence.queue_length,
        presence.queue_capacity,
        presence.arrival_rate,
        presence.service_var_s2,
        presence.service_samples,
        presence.admitted_rate,
    )


@attrs.frozen
class PeerEntry:
    """A live peer as this node last heard of it."""

    load: PeerLoad
    listen_addrs: tuple[str, ...]
    models: tuple[str, ...]
    last_seen_s: float  # seconds ago
    link: str | None = None  # "direct", "relayed" (circuit relay), None: not connected

    def to_json(self) -> dict[str, Any]:
        return {
            "peer_id": self.load.peer_id,
            "listen_addrs": list(self.listen_addrs),
            "models": list(self.models),
            "queue_length": self.load.queue_length,
            "queue_capacity": self.load.queue_capacity,
            "mean_service_s": self.load.mean_service_s,
            "arrival_rate": self.load.arrival_rate,
            "admitted_rate": self.load.admitted_rate,
            "last_seen_s": round(self.last_seen_s, 3),
            "link": self.link,
        }


@attrs.frozen
class SwarmLoad:
    """Utilisations if every user keeps its prompt rate and asks with the default (M, k)."""

    peer_ids: tuple[str, ...]  # this node first, then its live peers
    rhos: tuple[float, ...] | None  # per device; None while no service time is known
    rho_threshold: float  # the admission policy's ρ_max, else the stability bound
    threshold_source: str
    max_stable_rate: float | None  # per-user λ at which the slowest device reaches ρ = 1

    @property
    def rho(self) -> float | None:
        """The busiest device's ρ: what admission control compares with its threshold."""
        return max(self.rhos) if self.rhos else None

    @classmethod
    def project(cls, point: OperatingPoint, rho_max: float | None, source: str) -> SwarmLoad:
        peer_ids = tuple(load.peer_id for load in point.loads)
        if rho_max is None:
            rho_max, source = STABILITY_BOUND, "stability bound (Theorem 1)"
        alphas = point.alphas()
        if alphas is None:
            return cls(peer_ids, None, rho_max, source, None)
        layers, proposers = DEFAULT_LAYERS, min(DEFAULT_PROPOSERS, point.n - 1)
        arrivals = stability.uniform_arrival_rates(point.rates(), layers, proposers)
        rhos = tuple(stability.device_utilisations(arrivals, alphas))
        limit = stability.remark1_max_rate(alphas, layers, proposers)
        return cls(peer_ids, rhos, rho_max, source, limit)

    def to_json(self) -> dict[str, Any]:
        return {
            "configuration": {"layers": DEFAULT_LAYERS, "proposers": DEFAULT_PROPOSERS},
            "rho": self.rho,
            "rho_by_peer": dict(zip(self.peer_ids, self.rhos or (), strict=False)),
            "rho_threshold": self.rho_threshold,
            "threshold_source": self.threshold_source,
            "max_stable_rate_per_s": self.max_stable_rate,
        }


@attrs.frozen
class NodeSnapshot:
    """A node's state at one instant; built by `Node.snapshot` and nowhere else."""

    peer_id: str
    listen_addrs: tuple[str, ...]
    reachability: Reachability
    model: str
    own: PeerLoad  # this node's queue and estimates, as its presence advertises them
    peers: tuple[PeerEntry, ...]  # verified: this node has had a connection to each
    pending_peers: int  # heard of through presence, not reached yet: no proposer candidates
    connected_peers: tuple[str, ...]
    served: int
    failed: int
    messages_accepted: int
    messages_rejected: dict[str, int]
    refusals: dict[str, int]  # direct messages, presences and dials refused, by cause
    events: dict[str, int]
    prompts: dict[str, int]
    plugins: dict[str, str]
    admission_options: dict[str, str]
    rho_max: float | None  # the admission policy's threshold, if it has one
    presence_interval_s: float
    # peer sampling: view and stream sizes, shuffle messages/records/bytes sent and received
    sampling: dict[str, Any] = attrs.field(factory=dict)

    @property
    def operating_point(self) -> OperatingPoint:
        """This node and its live peers: service times, rates and queues, as last heard."""
        loads = (self.own, *(peer.load for peer in self.peers))
        return OperatingPoint(loads, self.own.mean_service_s)

    @property
    def swarm_load(self) -> SwarmLoad:
        source = f"admission policy {self.plugins['admission']!r}"
        return SwarmLoad.project(self.operating_point, self.rho_max, source)

    def presence(self) -> Presence:
        """This node's presence message as it advertises itself now (see `presence_of`)."""
        return presence_of(
            self.peer_id, self.listen_addrs, self.model, self.own, self.presence_interval_s
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON that `peers --json`, the control socket and `GET /status` return.

        Never fails to render: a value that is not a finite number becomes null.
        """
        own = self.own
        data: dict[str, Any] = finite(
            {
                "peer_id": self.peer_id,
                "listen_addrs": list(self.listen_addrs),
                "reachability": self.reachability.to_json(),
                "connected_peers": list(self.connected_peers),
                "peers": [peer.to_json() for peer in self.peers],
                "pending_peers": self.pending_peers,
                "messages": {
                    "accepted": self.messages_accepted,
                    "rejected": self.messages_rejected,
                },
                "refusals": self.refusals,
                "events": self.events,
                "queue": {
                    "length": own.queue_length,
                    "capacity": own.queue_capacity,
                    "mean_service_s": own.mean_service_s,
                    "service_var_s2": own.service_var_s2,
                    "arrival_rate": own.arrival_rate,
                    "admitted_rate": own.admitted_rate,
                    "served": self.served,
                    "failed": self.failed,
                },
                "prompts": self.prompts,
                "plugins": {**self.plugins, "admission_options": self.admission_options},
                "operating_point": self.swarm_load.to_json(),
                "sampling": self.sampling,
            }
        )
        return data


def presence_of(
    peer_id: str, listen_addrs: tuple[str, ...], model: str, own: PeerLoad, interval_s: float
) -> Presence:
    """A node's presence: its figures clamped to what the wire accepts (a burst of prompts
    or a hung model can overshoot the bounds)."""
    return Presence(
        peer_id=peer_id,
        listen_addrs=listen_addrs[: limits.MAX_LISTEN_ADDRS],
        models=(model[: limits.MAX_MODEL_CHARS],),
        mean_service_s=_at_most(own.mean_service_s, limits.MAX_SERVICE_S),
        service_var_s2=_at_most(own.service_var_s2, limits.MAX_SERVICE_VAR_S2),
        service_samples=min(own.service_samples, limits.MAX_SERVICE_SAMPLES),
        queue_length=own.queue_length,
        queue_capacity=own.queue_capacity,
        arrival_rate=_at_most(own.arrival_rate, limits.MAX_RATE_PER_S),
        admitted_rate=_at_most(own.admitted_rate, limits.MAX_RATE_PER_S),
        interval_s=interval_s,
    )


def _at_most(value: float | None, bound: float) -> float | None:
    return None if value is None else min(value, bound)


def finite(value: Any) -> Any:
    """`value` with every float that is not finite (JSON has none) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
