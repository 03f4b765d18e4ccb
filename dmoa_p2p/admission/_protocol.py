"""The admission plugin kind: accept, degrade or refuse a user's prompt before it costs anything."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal, Protocol

import attrs

from dmoa_p2p.admission._pooling import ServiceEstimate, pooled_service_times
from dmoa_p2p.moa import PeerLoad, QueryRequest

Action = Literal["accept", "degrade", "refuse"]
# a peer's advertised service time is believed within this factor of this node's own
# measured one: a peer cannot make the swarm look arbitrarily slow (and so have admission
# refuse this node's users) by claiming to be
CLAIMED_ALPHA_FACTOR = 10.0
# why a prompt was refused: the swarm's projected load is over the policy's threshold, this
# node's queue is full, the node's own cap on queued prompts is reached, or its model failed
RefusalCause = Literal["swarm_overloaded", "queue_full", "cap", "model_unavailable"]


class PromptRefused(Exception):
    """The node refuses this prompt now, for `cause`; `retry_after_s` says when to try again.

    Raised where the decision is made (admission, or the node when its model cannot
    answer); the HTTP API and the CLI only translate it.
    """

    def __init__(self, cause: RefusalCause, reason: str, retry_after_s: float) -> None:
        super().__init__(f"{reason}; retry in {whole_seconds(retry_after_s)} s")
        self.cause: RefusalCause = cause
        self.reason = reason
        self.retry_after_s = retry_after_s


def whole_seconds(seconds: float) -> int:
    """A wait as HTTP's Retry-After states it: whole seconds, rounded up, at least 1."""
    # the tolerance keeps 2.0000000001 (float arithmetic) from becoming 3
    return max(1, math.ceil(seconds - 1e-6)) if math.isfinite(seconds) else 1


@attrs.frozen
class OperatingPoint:
    """The swarm as this node sees it: itself first, then its live peers."""

    loads: tuple[PeerLoad, ...]  # loads[0] is this node
    default_alpha_s: float | None  # for devices that have not measured yet: this node's α

    @property
    def n(self) -> int:
        return len(self.loads)

    def alphas(self) -> list[float] | None:
        """Mean service times, pooled across devices (see `pooled_service_times`); unknown
        ones are filled with this node's, else the known ones' mean; None if none is known.
        Peers' figures are clipped to within CLAIMED_ALPHA_FACTOR of this node's own."""
        known = [i for i, p in enumerate(self.loads) if p.mean_service_s]
        if not known:
            return None if self.default_alpha_s is None else [self.default_alpha_s] * self.n
        estimates = [
            ServiceEstimate(p.mean_service_s, p.service_var_s2, p.service_samples)
            for p in (self.loads[i] for i in known)
            if p.mean_service_s
        ]
        pooled = dict(zip(known, pooled_service_times(estimates), strict=True))
        fallback = pooled.get(0, self.default_alpha_s) or statistics.fmean(pooled.values())
        alphas = [pooled.get(i, fallback) for i in range(self.n)]
        own = self.loads[0].mean_service_s
        if own:
            low, high = own / CLAIMED_ALPHA_FACTOR, own * CLAIMED_ALPHA_FACTOR
            alphas[1:] = [min(high, max(low, alpha)) for alpha in alphas[1:]]
        return alphas

    def rates(self) -> list[float]:
        return [p.arrival_rate or 0.0 for p in self.loads]


@attrs.frozen
class AdmissionContext:
    """What a policy decides on: the prompt, the swarm's load, this node's queue, the time."""

    request: QueryRequest
    point: OperatingPoint
    queue_length: int
    queue_capacity: int
    now: float = 0.0  # the node's clock (trio time), for policies that count over time


@attrs.frozen
class Decision:
    action: Action
    request: QueryRequest  # what to run: the original, or a smaller (M, k) when degraded
    reason: str = ""
    retry_after_s: float = 0.0
    projected_rho: float | None = None  # the busiest device's utilisation, if it was computed
    cause: RefusalCause | None = None  # set when the action is "refuse"

    def refusal(self) -> PromptRefused:
        return PromptRefused(self.cause or "swarm_overloaded", self.reason, self.retry_after_s)


class AdmissionPolicy(Protocol):
    """Decides, for each new user prompt, whether the swarm can take it on.

    One instance per node, built from `--admission-option` values when the node starts and
    kept until it stops (so a policy may keep state, e.g. the share it admitted).
    """

    def decide(self, context: AdmissionContext) -> Decision: ...


def candidate_configurations(layers: int, proposers: int) -> Sequence[tuple[int, int]]:
    """Every (M', k') no larger than (M, k), most inferences first (ties: more layers first).

    Layers without peers (k' = 0, M' > 0) only repeat the local model, so they are skipped.
    """
    options = [
        (m, k) for m in range(layers + 1) for k in range(proposers + 1) if (m == 0) == (k == 0)
    ]
    return sorted(options, key=lambda mk: ((mk[1] + 1) * mk[0] + 1, mk[0]), reverse=True)
