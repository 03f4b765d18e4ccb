"""One snapshot of a node's state: what presence, /status, /metrics, `peers` and admission read."""

from __future__ import annotations

from typing import Any

import attrs

from dmoa_p2p import stability
from dmoa_p2p.admission import OperatingPoint
from dmoa_p2p.moa import DEFAULT_LAYERS, DEFAULT_PROPOSERS, PeerLoad
from dmoa_p2p.wire import Presence

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
    model: str
    own: PeerLoad  # this node's queue and estimates, as its presence advertises them
    peers: tuple[PeerEntry, ...]
    connected_peers: tuple[str, ...]
    served: int
    failed: int
    messages_accepted: int
    messages_rejected: dict[str, int]
    events: dict[str, int]
    prompts: dict[str, int]
    plugins: dict[str, str]
    admission_options: dict[str, str]
    rho_max: float | None  # the admission policy's threshold, if it has one
    presence_interval_s: float

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
        """This node's presence message as it advertises itself now."""
        own = self.own
        return Presence(
            peer_id=self.peer_id,
            listen_addrs=self.listen_addrs,
            models=(self.model,),
            mean_service_s=own.mean_service_s,
            service_var_s2=own.service_var_s2,
            service_samples=own.service_samples,
            queue_length=own.queue_length,
            queue_capacity=own.queue_capacity,
            arrival_rate=own.arrival_rate,
            admitted_rate=own.admitted_rate,
            interval_s=self.presence_interval_s,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON that `peers --json`, the control socket and `GET /status` return."""
        own = self.own
        return {
            "peer_id": self.peer_id,
            "listen_addrs": list(self.listen_addrs),
            "connected_peers": list(self.connected_peers),
            "peers": [peer.to_json() for peer in self.peers],
            "messages": {"accepted": self.messages_accepted, "rejected": self.messages_rejected},
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
        }
