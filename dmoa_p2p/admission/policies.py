"""Built-in admission policies: none, threshold, degrade, cap."""

from __future__ import annotations

import math

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
    """The busiest device's utilisation if every user sends prompts at the rate it offers now
    and all of them run with (M, k).

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
class EvenShare:
    """Says yes to a given share of calls, spread evenly: a running credit, not dice.

    Admission takes a share of prompts rather than all or none, so that the load it lets
    through sits at ρ_max instead of swinging around it; a seeded run stays reproducible.
    """

    credit: float = 0.0

    def take(self, share: float) -> bool:
        self.credit += min(1.0, max(0.0, share))
        if self.credit >= 1.0 - 1e-9:  # a share of 0.3 ten times adds up to 2.9999999999999996
            self.credit -= 1.0
            return True
        return False


@attrs.define
class NoAdmission:
    """`none`: accept every prompt (the queue's own capacity still applies)."""

    def decide(self, context: AdmissionContext) -> Decision:
        return Decision("accept", context.request)


@attrs.define
class ThresholdAdmission:
    """`threshold`: when the projected ρ is at or above ρ_max, admit only users' fair shares.

    ρ is projected from the rates users offer (refused prompts included), so there is no
    feedback loop to swing. Under overload every user may send up to the same rate (the
    max-min fair share that brings the busiest device to ρ_max, see `fair_rate`): a node
    whose users offer more admits that share of their prompts, evenly spread, and refuses
    the rest with a reason and a retry-after; users who stay below it are never refused.
    """

    rho_max: float = DEFAULT_RHO_MAX
    _share: EvenShare = attrs.field(factory=EvenShare, init=False, eq=False, repr=False)

    def decide(self, context: AdmissionContext) -> Decision:
        request = context.request
        point = context.point
        rho = projected_rho(point, request.layers, request.proposers)
        if rho is None or rho < self.rho_max:
            return Decision("accept", request, projected_rho=rho)
        fair = fair_rate(point, request.layers, request.proposers, self.rho_max)
        own = point.rates()[0]
        if own <= fair or self._share.take(fair / own):
            return Decision("accept", request, projected_rho=rho)
        return Decision(
            "refuse",
            request,
            f"the swarm's users ask for ρ = {rho:.2f}; to keep it below ρ_max = "
            f"{self.rho_max:.2f} each user may send {fair * 60:.2g} prompts a minute, and "
            f"this node's send {own * 60:.2g}",
            _retry_after(context),
            rho,
        )


def fair_rate(point: OperatingPoint, layers: int, proposers: int, rho_max: float) -> float:
    """The per-user rate cap c at which the busiest device reaches ρ_max (max-min fairness).

    Users offering less than c keep their rate, the others are held to c. The projected ρ
    grows with c, so c is found by bisection (to a millionth of the largest offered rate).
    """
    alphas = point.alphas()
    offered = point.rates()
    if alphas is None or not offered:
        return math.inf
    k = min(proposers, point.n - 1)

    def busiest(cap: float) -> float:
        capped = [min(rate, cap) for rate in offered]
        arrivals = stability.uniform_arrival_rates(capped, layers, k)
        return max(stability.device_utilisations(arrivals, alphas))

    low, high = 0.0, max(offered)
    if busiest(high) < rho_max:
        return high
    while high - low > 1e-6 * max(offered):
        middle = (low + high) / 2
        low, high = (middle, high) if busiest(middle) < rho_max else (low, middle)
    return low


@attrs.define
class DegradeAdmission:
    """`degrade`: shrink (M, k) just enough to keep the projected ρ at ρ_max; refuse if M = 0
    does not fit.

    The largest configuration whose projected ρ is below ρ_max would waste what is left up to
    ρ_max (at 2× the threshold with M = k = 2 everyone would drop to (1, 1), ρ = 0.86), so a
    share of prompts runs the next larger configuration instead, chosen so that the
    projected ρ averages ρ_max. ρ is projected as if every user ran this node's mix, which
    is where a swarm of nodes with this policy settles.
    """

    rho_max: float = DEFAULT_RHO_MAX
    _share: EvenShare = attrs.field(factory=EvenShare, init=False, eq=False, repr=False)

    def decide(self, context: AdmissionContext) -> Decision:
        request = context.request
        options = candidate_configurations(request.layers, request.proposers)
        rhos = [projected_rho(context.point, layers, proposers) for layers, proposers in options]
        fits = [i for i, rho in enumerate(rhos) if rho is None or rho < self.rho_max]
        if fits and fits[0] == 0:
            return Decision("accept", request, projected_rho=rhos[0])
        if not fits:
            return Decision(
                "refuse",
                request,
                f"even a local answer would put the swarm at ρ = {rhos[-1]:.2f} "
                f"≥ {self.rho_max:.2f}",
                _retry_after(context),
                rhos[-1],
            )
        chosen = fits[0]
        smaller, larger = rhos[chosen], rhos[chosen - 1]
        assert smaller is not None and larger is not None  # an unknown ρ always fits
        # ρ is linear in the share of prompts that run the larger configuration
        if self._share.take((self.rho_max - smaller) / (larger - smaller)):
            chosen -= 1
        if chosen == 0:
            return Decision("accept", request, projected_rho=rhos[0])
        layers, proposers = options[chosen]
        reason = (
            f"degraded from M={request.layers}, k={request.proposers} to M={layers}, "
            f"k={proposers}: as asked the swarm would be at ρ = {rhos[0]:.2f}; the mix of "
            f"sizes keeps it at ρ_max = {self.rho_max:.2f} on average"
        )
        return Decision(
            "degrade",
            attrs.evolve(request, layers=layers, proposers=proposers),
            reason,
            projected_rho=rhos[chosen],
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
