"""Built-in admission policies: none, threshold, degrade, cap."""

from __future__ import annotations

import attrs

from dmoa_p2p import stability
from dmoa_p2p.admission._protocol import (
    AdmissionContext,
    Decision,
    OperatingPoint,
    candidate_configurations,
)

DEFAULT_RHO_MAX = 0.9


def projected_rho(point: OperatingPoint, layers: int, proposers: int) -> float | None:
    """The busiest device's utilisation if everyone keeps their rates and uses (M, k).

    Uses the per-device condition under uniform choice of proposers (see `stability`); None
    while no service time has been measured anywhere.
    """
    alphas = point.alphas()
    if alphas is None:
        return None
    k = min(proposers, point.n - 1)
    arrivals = stability.uniform_arrival_rates(point.rates(), layers, k)
    return max(stability.device_utilisations(arrivals, alphas))


def _retry_after(context: AdmissionContext) -> float:
    alpha = context.point.default_alpha_s or 1.0
    return max(1.0, alpha * max(1, context.queue_length))


@attrs.define
class NoAdmission:
    """`none`: accept every prompt (the queue's own capacity still applies)."""

    def decide(self, context: AdmissionContext) -> Decision:
        return Decision("accept", context.request)


@attrs.define
class ThresholdAdmission:
    """`threshold`: refuse new prompts while the projected utilisation is at or above ρ_max."""

    rho_max: float = DEFAULT_RHO_MAX

    def decide(self, context: AdmissionContext) -> Decision:
        request = context.request
        rho = projected_rho(context.point, request.layers, request.proposers)
        if rho is None or rho < self.rho_max:
            return Decision("accept", request, projected_rho=rho)
        return Decision(
            "refuse",
            request,
            f"the swarm is at ρ = {rho:.2f}, at or above ρ_max = {self.rho_max:.2f}",
            _retry_after(context),
            rho,
        )


@attrs.define
class DegradeAdmission:
    """`degrade`: run the largest (M, k) that keeps ρ below ρ_max; refuse if even M = 0 does not."""

    rho_max: float = DEFAULT_RHO_MAX

    def decide(self, context: AdmissionContext) -> Decision:
        request = context.request
        for layers, proposers in candidate_configurations(request.layers, request.proposers):
            rho = projected_rho(context.point, layers, proposers)
            if rho is None or rho < self.rho_max:
                if (layers, proposers) == (request.layers, request.proposers):
                    return Decision("accept", request, projected_rho=rho)
                smaller = attrs.evolve(request, layers=layers, proposers=proposers)
                reason = (
                    f"degraded from M={request.layers}, k={request.proposers} to M={layers}, "
                    f"k={proposers} to keep ρ below {self.rho_max:.2f}"
                    + (f" (ρ = {rho:.2f})" if rho is not None else "")
                )
                return Decision("degrade", smaller, reason, projected_rho=rho)
        rho = projected_rho(context.point, 0, 0)
        return Decision(
            "refuse",
            request,
            f"even a local answer would put the swarm at ρ = {rho:.2f} ≥ {self.rho_max:.2f}",
            _retry_after(context),
            rho,
        )


@attrs.define
class CapAdmission:
    """`cap`: refuse new prompts while this node's queue holds `cap` prompts or more."""

    cap: int | None = None  # None: the queue's capacity

    def decide(self, context: AdmissionContext) -> Decision:
        cap = self.cap if self.cap is not None else context.queue_capacity
        if context.queue_length < cap:
            return Decision("accept", context.request)
        return Decision(
            "refuse",
            context.request,
            f"this node's queue holds {context.queue_length} prompts (cap {cap})",
            _retry_after(context),
        )
