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
        load = _FairShare.assess(context, self.rho_max)
        if load.share >= 1.0 or self._share.take(load.share):
            return Decision("accept", request, projected_rho=load.rho)
        return Decision(
            "refuse",
            request,
            f"the swarm's users ask for ρ = {load.rho:.2f}; to keep it below ρ_max = "
            f"{self.rho_max:.2f} each user may send {load.fair_rate * 60:.2g} prompts a "
            f"minute, and this node's send {load.own_rate * 60:.2g}",
            _retry_after(context),
            load.rho,
        )


@attrs.frozen
class _FairShare:
    """What share of this node's prompts fits under ρ_max, by max-min fairness."""

    rho: float | None  # projected at the asked (M, k) from the offered rates
    fair_rate: float  # the per-user cap; ∞ while nobody needs holding back
    own_rate: float  # what this node's users offer

    @property
    def share(self) -> float:
        return 1.0 if self.own_rate <= self.fair_rate else self.fair_rate / self.own_rate

    @classmethod
    def assess(cls, context: AdmissionContext, rho_max: float) -> _FairShare:
        request, point = context.request, context.point
        own = point.rates()[0]
        rho = projected_rho(point, request.layers, request.proposers)
        if rho is None or rho < rho_max:
            return cls(rho, math.inf, own)
        return cls(rho, fair_rate(point, request.layers, request.proposers, rho_max), own)


def fair_rate(point: OperatingPoint, layers: int, proposers: int, rho_max: float) -> float:
    """`stability.fair_rate_cap` at this operating point; ∞ while no service time is known."""
    alphas = point.alphas()
    if alphas is None:
        return math.inf
    k = min(proposers, point.n - 1)
    return stability.fair_rate_cap(point.rates(), alphas, layers, k, rho_max)


@attrs.define
class DegradeAdmission:
    """`degrade`: under overload, shrink (M, k) of the prompts of users above their fair share.

    Like `threshold`, each user may load the swarm as much as one sending the fair rate at
    the asked (M, k) (see `fair_rate`). A node whose users send more runs their prompts with
    fewer inferences on average: the largest (M', k') within that budget, and for a share of
    prompts the next larger one, so that the average meets the budget rather than falling
    short of it. When even local answers exceed it, that share is refused. Inferences stand
    in for load here (Theorem 1's ρ is proportional to them).
    """

    rho_max: float = DEFAULT_RHO_MAX
    _share: EvenShare = attrs.field(factory=EvenShare, init=False, eq=False, repr=False)

    def decide(self, context: AdmissionContext) -> Decision:
        request = context.request
        load = _FairShare.assess(context, self.rho_max)
        if load.share >= 1.0:
            return Decision("accept", request, projected_rho=load.rho)
        options = candidate_configurations(request.layers, request.proposers)
        costs = [
            stability.inferences_per_prompt(layers, min(proposers, context.point.n - 1))
            for layers, proposers in options
        ]
        budget = costs[0] * load.share  # inferences per prompt this node's users may average
        why = (
            f"the swarm's users ask for ρ = {load.rho:.2f}; to keep it below ρ_max = "
            f"{self.rho_max:.2f} this node's prompts may average {budget:.1f} inferences"
        )
        chosen = next((i for i, cost in enumerate(costs) if cost <= budget), None)
        if chosen is None:  # even a local answer is over budget: answer a share of prompts
            if not self._share.take(budget):
                return Decision("refuse", request, why, _retry_after(context), load.rho)
            chosen = len(options) - 1
        elif self._share.take((budget - costs[chosen]) / (costs[chosen - 1] - costs[chosen])):
            chosen -= 1
        if chosen == 0:
            return Decision("accept", request, projected_rho=load.rho)
        layers, proposers = options[chosen]
        return Decision(
            "degrade",
            attrs.evolve(request, layers=layers, proposers=proposers),
            f"degraded from M={request.layers}, k={request.proposers} to M={layers}, "
            f"k={proposers}: {why}",
            projected_rho=load.rho,
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
