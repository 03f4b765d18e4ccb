"""Built-in admission policies: none, threshold, degrade, cap."""

from __future__ import annotations

import math

import attrs

from dmoa_p2p import stability
from dmoa_p2p.admission._protocol import (
    AdmissionContext,
    Decision,
    OperatingPoint,
    RefusalCause,
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
    return _busiest(point.rates(), alphas, layers, min(proposers, point.n - 1))


def _busiest(rates: list[float], alphas: list[float], layers: int, proposers: int) -> float:
    arrivals = stability.uniform_arrival_rates(rates, layers, proposers)
    return max(stability.device_utilisations(arrivals, alphas))


def _rho_max_in_range(_instance: object, _attribute: object, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(
            f"rho_max must be above 0 and below 1 (queues grow without bound at 1), not {value}"
        )


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

    ρ is projected from the rates users offer (refused prompts included), so admitting
    less does not lower the estimate and there is no feedback loop to swing. Under overload
    every user may send up to the same rate (the max-min fair share that brings the busiest
    device to ρ_max, `stability.fair_rate_cap`): a node whose users offer more admits that
    share of their prompts, evenly spread, and refuses the rest with a reason and a
    retry-after; users who stay below it are never refused. A client that retries refused
    prompts raises its offered rate, so its share shrinks, but what is admitted stays at the
    fair rate.
    """

    rho_max: float = attrs.field(default=DEFAULT_RHO_MAX, validator=_rho_max_in_range)
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
            f"{self.rho_max:.2f} each user may send {load.fair_rate * 60:.3g} prompts a "
            f"minute, and this node's users send {load.own_rate * 60:.3g}",
            _retry_after(context),
            load.rho,
            "swarm_overloaded",
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
        rates = point.rates()
        alphas = point.alphas()  # pooled once for both figures
        if alphas is None:
            return cls(None, math.inf, rates[0])
        k = min(request.proposers, point.n - 1)
        rho = _busiest(rates, alphas, request.layers, k)
        if rho < rho_max:
            return cls(rho, math.inf, rates[0])
        fair = stability.fair_rate_cap(rates, alphas, request.layers, k, rho_max)
        return cls(rho, fair, rates[0])


@attrs.define
class DegradeAdmission:
    """`degrade`: under overload, shrink (M, k) of the prompts of users above their fair share.

    Like `threshold`, each user may load the swarm as much as one sending the fair rate at
    the asked (M, k) (`stability.fair_rate_cap`). A node whose users send more runs their
    prompts with fewer inferences on average: the largest (M', k') within that budget, and
    for a share of prompts the next larger one, so that the average meets the budget rather
    than falling short of it. Only when even local answers exceed the budget are prompts
    refused (the share beyond it). Inferences stand in for load here (Theorem 1's ρ is
    proportional to them).
    """

    rho_max: float = attrs.field(default=DEFAULT_RHO_MAX, validator=_rho_max_in_range)
    _share: EvenShare = attrs.field(factory=EvenShare, init=False, eq=False, repr=False)

    def decide(self, context: AdmissionContext) -> Decision:
        request = context.request
        load = _FairShare.assess(context, self.rho_max)
        if load.share >= 1.0:
            return Decision("accept", request, projected_rho=load.rho)
        asked = (request.layers, request.proposers)
        options = candidate_configurations(*asked)
        if options[0] != asked:  # (M, 0) is not a candidate, but it is what was asked
            options = [asked, *options]
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
                return Decision(
                    "refuse", request, why, _retry_after(context), load.rho, "swarm_overloaded"
                )
            chosen = len(options) - 1
        elif self._share.take((budget - costs[chosen]) / (costs[chosen - 1] - costs[chosen])):
            chosen = costs.index(costs[chosen - 1])  # the largest size at that cost
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
        if cap >= context.queue_capacity:
            cause: RefusalCause = "queue_full"
            reason = (
                f"this node's queue is full: it holds {context.queue_length} prompts "
                f"(capacity {context.queue_capacity})"
            )
        else:  # the operator's limit on this node, whatever the rest of the swarm could take
            cause = "cap"
            reason = (
                f"this node admits at most {cap} prompts at a time: its queue holds "
                f"{context.queue_length} prompts (cap {cap})"
            )
        return Decision("refuse", context.request, reason, _retry_after(context), cause=cause)
