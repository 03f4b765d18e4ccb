"""The swarm's load as one node sees it: each device's projected ρ, the threshold, the stable λ."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from dmoa_p2p import stability
from dmoa_p2p.http._request import MoaSettings

if TYPE_CHECKING:
    from dmoa_p2p.node import Node

# the configuration ρ is projected for: what the model name `dmoa` runs
REFERENCE = MoaSettings()
STABILITY_BOUND = 1.0  # Theorem 1: queues stay bounded while ρ < 1


@attrs.frozen
class SwarmLoad:
    """Utilisations if every user keeps its prompt rate and asks with REFERENCE's (M, k)."""

    peer_ids: tuple[str, ...]  # this node first, then its live peers
    rhos: tuple[float, ...] | None  # per device; None while no service time is known
    rho_threshold: float  # the admission policy's ρ_max, else the stability bound
    threshold_source: str
    max_stable_rate: float | None  # per-user λ at which the slowest device reaches ρ = 1

    @property
    def rho(self) -> float | None:
        """The busiest device's ρ: what admission control compares with its threshold."""
        return max(self.rhos) if self.rhos else None

    def to_json(self) -> dict[str, Any]:
        return {
            "configuration": REFERENCE.to_json(),
            "rho": self.rho,
            "rho_by_peer": dict(zip(self.peer_ids, self.rhos or (), strict=False)),
            "rho_threshold": self.rho_threshold,
            "threshold_source": self.threshold_source,
            "max_stable_rate_per_s": self.max_stable_rate,
        }


def swarm_load(node: Node) -> SwarmLoad:
    point = node.operating_point()
    peer_ids = tuple(load.peer_id for load in point.loads)
    rho_max = getattr(node.admission, "rho_max", None)
    if isinstance(rho_max, float | int):
        threshold, source = float(rho_max), f"admission policy {node.config.admission!r}"
    else:
        threshold, source = STABILITY_BOUND, "stability bound (Theorem 1)"
    alphas = point.alphas()
    if alphas is None:
        return SwarmLoad(peer_ids, None, threshold, source, None)
    layers = REFERENCE.layers
    proposers = min(REFERENCE.proposers, point.n - 1)
    arrivals = stability.uniform_arrival_rates(point.rates(), layers, proposers)
    rhos = tuple(stability.device_utilisations(arrivals, alphas))
    return SwarmLoad(
        peer_ids,
        rhos,
        threshold,
        source,
        stability.remark1_max_rate(alphas, layers, proposers),
    )
