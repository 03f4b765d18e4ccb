"""Queue stability of a distributed MoA: the paper's thresholds, what follows, predictions.

Pure functions, no I/O: the node, the simulator and the CLI calculator share them.
Notation: n devices, per-user prompt rate λ (per second), mean inference time α (seconds),
M proposer layers, k proposers per layer. Every prompt costs (k+1)·M + 1 inferences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

# How proposers are chosen: uniformly at random (the paper), or by spare capacity.
Choice = Literal["uniform", "capacity"]
# The `capacity` strategy keeps this fraction of a saturated device's service rate as its weight.
SPARE_FLOOR = 0.05
BISECTION_TOLERANCE = 1e-12


def inferences_per_prompt(layers: int, proposers: int) -> int:
    """(k+1)·M + 1: k peers and the origin per layer, plus the final aggregation. Exact."""
    return (proposers + 1) * layers + 1


def utilisation(alpha: float, rate: float, layers: int, proposers: int) -> float:
    """ρ = α·((k+1)M+1)·λ for identical devices (Theorem 1's left-hand side). Exact as a mean."""
    return alpha * inferences_per_prompt(layers, proposers) * rate


def theorem1_stable(alpha: float, rate: float, layers: int, proposers: int) -> bool:
    """Theorem 1: every queue is stable iff α·((k+1)M+1)·λ < 1 (equal λ, equal α).

    Exact as a mean-rate condition: at or above 1, work arrives faster than it is served and
    queues grow without bound; below 1 they stay bounded (for Poisson-like arrivals).
    """
    return utilisation(alpha, rate, layers, proposers) < 1.0


def max_stable_rate(alpha: float, layers: int, proposers: int) -> float:
    """The per-user λ at which Theorem 1's ρ reaches 1: 1/(α·((k+1)M+1)). Exact threshold."""
    return 1.0 / (alpha * inferences_per_prompt(layers, proposers))


def remark1_max_rate(alphas: Sequence[float], layers: int, proposers: int) -> float:
    """Remark 1: with unequal α's and uniform choice, λ < 1/(α_max·((k+1)M+1)). Exact threshold."""
    return max_stable_rate(max(alphas), layers, proposers)


def uniform_arrival_rates(rates: Sequence[float], layers: int, proposers: int) -> list[float]:
    """Inference arrival rate at each device under uniform choice of proposers. Exact (means).

    Device i serves its own prompts in every layer and aggregates them (M+1 per prompt), and
    each other user j picks i as one of its k proposers with probability k/(n−1) per layer:
    r_i = λ_i·(M+1) + (k·M/(n−1))·Σ_{j≠i} λ_j. With equal λ this is ((k+1)M+1)·λ.
    """
    n = len(rates)
    if n == 1 or layers == 0:
        return [lam * (layers + 1) for lam in rates]
    _check_proposers(n, proposers)
    total = sum(rates)
    share = proposers * layers / (n - 1)
    return [lam * (layers + 1) + share * (total - lam) for lam in rates]


def spare_capacity_weights(
    rates: Sequence[float], alphas: Sequence[float], layers: int, floor: float = SPARE_FLOOR
) -> list[float]:
    """w_i = max(floor·μ_i, μ_i − λ_i·(M+1)), μ_i = 1/α_i: the `capacity` strategy's weights.

    The service rate device i has left after its own users' M+1 inferences per prompt,
    floored so that a device its own users saturate is rarely chosen but never excluded.
    Exact (a definition).
    """
    weights = []
    for lam, alpha in zip(rates, alphas, strict=True):
        mu = 1.0 / alpha
        weights.append(max(floor * mu, mu - lam * (layers + 1)))
    return weights


def capped_shares(weights: Sequence[float], total: int) -> list[float]:
    """Shares proportional to `weights` that sum to `total`, none above 1 (water-filling). Exact.

    These are the inclusion probabilities of the `capacity` strategy's systematic sampler:
    shares that would exceed 1 are set to 1 and the rest is spread again over the others.
    All-zero weights share equally.
    """
    if not 0 <= total <= len(weights):
        raise ValueError(f"cannot choose {total} of {len(weights)}")
    shares = [0.0] * len(weights)
    free = list(range(len(weights)))
    left = float(total)
    while free and left > 0:
        mass = sum(weights[i] for i in free)
        capped = [i for i in free if mass > 0 and left * weights[i] / mass >= 1.0]
        if not capped:
            for i in free:
                shares[i] = left * weights[i] / mass if mass > 0 else left / len(free)
            break
        for i in capped:
            shares[i] = 1.0
            free.remove(i)
        left -= len(capped)
    return shares


def selection_probabilities(weights: Sequence[float], proposers: int) -> list[list[float]]:
    """p[j][i]: probability that origin j picks device i as one of its k proposers in a layer.

    Row j is `capped_shares` of the other devices' weights: exact for the systematic sampler
    the `capacity` strategy uses (each device is drawn with exactly its share, never twice).
    """
    n = len(weights)
    _check_proposers(n, proposers)
    table = []
    for j in range(n):
        others = [i for i in range(n) if i != j]
        row = [0.0] * n
        row_probs = capped_shares([weights[i] for i in others], proposers)
        for i, p in zip(others, row_probs, strict=True):
            row[i] = p
        table.append(row)
    return table


def weighted_arrival_rates(
    rates: Sequence[float], weights: Sequence[float], layers: int, proposers: int
) -> list[float]:
    """Inference arrival rate at each device when proposers are chosen by `weights`.

    r_i = λ_i·(M+1) + M·Σ_{j≠i} λ_j·p[j][i]; exact given p (see `selection_probabilities`).
    Equal weights give `uniform_arrival_rates`.
    """
    if len(rates) == 1 or layers == 0:
        return [lam * (layers + 1) for lam in rates]
    p = selection_probabilities(weights, proposers)
    n = len(rates)
    return [
        rates[i] * (layers + 1) + layers * sum(rates[j] * p[j][i] for j in range(n) if j != i)
        for i in range(n)
    ]


def sampled_arrival_rates(
    rates: Sequence[float], in_degrees: Sequence[float], layers: int, proposers: int
) -> list[float]:
    """Inference arrival rate at each device when origins draw proposers from partial views.

    Device i is in d_i views (`in_degrees`) and origin j draws k uniformly from its view, so
    j picks i with probability k·d_i/Σ_{l≠j} d_l per layer (`weighted_arrival_rates` with
    weights d): r_i = λ_i·(M+1) + k·M·d_i·Σ_{j≠i} λ_j/(D − d_j), D = Σ d. Approximate (mean
    field: views as independent draws by d); equal d's give `uniform_arrival_rates` exactly.
    With equal λ and α the most held device bounds Theorem 1: about α·λ·(M+1 + k·M·d_max/d̄)
    < 1. Use time-averaged in-degrees for stability: queues integrate load over time.
    """
    n = len(rates)
    if len(in_degrees) != n:
        raise ValueError(f"{len(in_degrees)} in-degrees for {n} devices")
    if n == 1 or layers == 0:
        return [lam * (layers + 1) for lam in rates]
    _check_proposers(n, proposers)
    total = float(sum(in_degrees))
    if min(in_degrees) < 0 or total <= max(in_degrees):
        raise ValueError("in-degrees must be >= 0, at least two devices held")
    if proposers * max(in_degrees) > total - max(in_degrees):  # a share over 1: cap them
        return weighted_arrival_rates(rates, in_degrees, layers, proposers)
    spread = sum(lam / (total - d) for lam, d in zip(rates, in_degrees, strict=True))  # Σ_j
    return [
        lam * (layers + 1) + proposers * layers * d * (spread - lam / (total - d))
        for lam, d in zip(rates, in_degrees, strict=True)
    ]


def view_arrival_rates(
    rates: Sequence[float], views: Sequence[Sequence[int]], layers: int, proposers: int
) -> list[float]:
    """Inference arrival rate at each device for given views (device j's is `views[j]`):
    origin j picks i ∈ V_j with probability min(k, |V_j|)/|V_j| per layer. Exact (means)
    for fixed views; complete views give `uniform_arrival_rates`."""
    if len(views) != len(rates):
        raise ValueError(f"{len(views)} views for {len(rates)} devices")
    arrivals = [lam * (layers + 1) for lam in rates]
    for j, view in enumerate(views):
        members = set(view) - {j}
        if not members or layers == 0:
            continue
        share = layers * rates[j] * min(proposers, len(members)) / len(members)
        for i in members:
            arrivals[i] += share
    return arrivals


def max_stable_rate_for_loads(unit_arrivals: Sequence[float], alphas: Sequence[float]) -> float:
    """Largest equal per-user λ with every device stable, from arrival rates at λ = 1 (linear
    in λ when choice ignores load: `uniform_arrival_rates`, `view_arrival_rates`)."""
    busiest = max(r * a for r, a in zip(unit_arrivals, alphas, strict=True))
    return math.inf if busiest <= 0 else 1.0 / busiest


def device_utilisations(arrival_rates: Sequence[float], alphas: Sequence[float]) -> list[float]:
    """ρ_i = r_i·α_i: device i is stable iff ρ_i < 1. Exact as a mean-rate condition."""
    return [r * a for r, a in zip(arrival_rates, alphas, strict=True)]


def inference_arrival_rates(
    rates: Sequence[float],
    alphas: Sequence[float],
    layers: int,
    proposers: int,
    choice: Choice = "uniform",
    floor: float = SPARE_FLOOR,
) -> list[float]:
    """Inference arrival rate at each device when proposers are chosen by `choice`. Exact (means).

    "uniform": `uniform_arrival_rates`; "capacity": `weighted_arrival_rates` with
    `spare_capacity_weights` (every device runs the same M).
    """
    if choice == "uniform":
        return uniform_arrival_rates(rates, layers, proposers)
    weights = spare_capacity_weights(rates, alphas, layers, floor)
    return weighted_arrival_rates(rates, weights, layers, proposers)


def max_stable_scale(
    rates: Sequence[float],
    alphas: Sequence[float],
    layers: int,
    proposers: int,
    choice: Choice = "uniform",
    floor: float = SPARE_FLOOR,
) -> float:
    """The largest factor s such that every device stays stable at rates s·λ_i.

    With equal λ = 1 this is the maximum stable per-user rate. "uniform": arrival rates are
    linear in the λ's, so s = 1/max_i(ρ_i) at the given rates; exact. "capacity": the weights
    depend on the λ's, so s is found by bisection; exact to a relative `BISECTION_TOLERANCE`,
    and never below the boundary (at the returned s the busiest device has ρ ≥ 1).
    """
    if choice == "uniform":
        worst = max(device_utilisations(uniform_arrival_rates(rates, layers, proposers), alphas))
        return math.inf if worst == 0 else 1.0 / worst
    own = max(lam * (layers + 1) * a for lam, a in zip(rates, alphas, strict=True))
    if own == 0:
        return math.inf

    def busiest(s: float) -> float:
        scaled = [s * lam for lam in rates]
        arrivals = inference_arrival_rates(scaled, alphas, layers, proposers, choice, floor)
        return max(device_utilisations(arrivals, alphas))

    # Each ρ_i grows with s: a device's own load grows and every other device's spare
    # capacity shrinks. At s = 1/own some device's own users alone keep it busy.
    return crossing(busiest, 1.0 / own)


def fair_rate_cap(
    rates: Sequence[float], alphas: Sequence[float], layers: int, proposers: int, rho_max: float
) -> float:
    """The max-min fair per-user rate c: with every λ_i held to min(λ_i, c) under uniform
    choice, the busiest device is at ρ_max. Exact to the bisection tolerance.

    Users below c keep their rate. When even uncapped rates keep every device below ρ_max,
    c is the largest rate (nobody needs holding back).
    """
    highest = max(rates, default=0.0)

    def busiest(cap: float) -> float:
        capped = [min(lam, cap) for lam in rates]
        arrivals = uniform_arrival_rates(capped, layers, proposers)
        return max(device_utilisations(arrivals, alphas)) / rho_max

    if highest == 0 or busiest(highest) < 1.0:
        return highest
    return crossing(busiest, highest)


def crossing(f: Callable[[float], float], start: float) -> float:
    """The s > 0 where an increasing, unbounded f reaches 1. Exact to the bisection tolerance.

    Doubles from `start` (> 0) until f ≥ 1, then bisects to a relative `BISECTION_TOLERANCE`;
    the result is never below the crossing: f(s) ≥ 1. ValueError if f stays below 1 up to
    the largest float.
    """
    if not start > 0:
        raise ValueError(f"the search must start above 0, not at {start}")
    low, high = 0.0, start
    while f(high) < 1.0:
        if math.isinf(high):
            raise ValueError("f never reaches 1")
        low, high = high, 2.0 * high
    while high - low > BISECTION_TOLERANCE * high:
        mid = (low + high) / 2
        if f(mid) < 1.0:
            low = mid
        else:
            high = mid
    return high


def fair_task_rate(alpha: float, devices: int) -> float:
    """μ/n = 1/(α·n): one origin's fair share of a device's service rate. Exact (a definition).

    A device serves 1/α inferences per second (μ; the paper's 1/α). Its own users and each of
    its n − 1 peers are one origin each; splitting μ equally among the n of them gives each
    μ/n, the max-min fair share when every origin wants more than that.
    """
    if devices < 1:
        raise ValueError(f"a swarm has at least one device, not {devices}")
    return 1.0 / (alpha * devices)


def uniform_task_rate(rate: float, devices: int, layers: int, proposers: int) -> float:
    """λ·k·M/(n−1): tasks per second one origin sends one given peer under uniform choice.

    Exact as a mean: the origin's users send λ prompts per second, and in each of the M
    layers the origin draws k of its n − 1 peers uniformly, so a given peer is drawn with
    probability k/(n−1). Re-routed tasks (after a refusal or a departure) come on top, and
    only after such an event. No peers (n = 1) or no layers: 0.

    Below Theorem 1's threshold an honest origin never exceeds the fair rate μ/n
    (`fair_task_rate`) when k ≤ n − 1. Proof: λ·k·M/(n−1) ≤ 1/(α·n) ⟺ α·λ·n·k·M ≤ n − 1.
    Below the threshold α·λ < 1/((k+1)M+1), so it suffices that
    n·k·M ≤ (n−1)·((k+1)M+1) = n·k·M + (n−1) + M·(n−1−k), i.e. 0 ≤ (n−1) + M·(n−1−k),
    which holds for k ≤ n − 1 (strictly, for n ≥ 2). Hence the uniform task rate is at most
    ρ·`honest_share_of_fair_rate` < ρ < 1 times μ/n, with ρ Theorem 1's utilisation. With
    unequal devices the same holds at each device below Remark 1's bound (α_i ≤ α_max).
    """
    if devices <= 1 or layers == 0:
        return 0.0
    _check_proposers(devices, proposers)
    return rate * proposers * layers / (devices - 1)


def honest_share_of_fair_rate(devices: int, layers: int, proposers: int) -> float:
    """n·k·M/((n−1)·((k+1)M+1)): an honest origin's task rate over μ/n at Theorem 1's threshold.

    Exact: `uniform_task_rate` / `fair_task_rate` at λ = `max_stable_rate`; at a lower λ the
    ratio is this times ρ. Below 1 whenever k ≤ n − 1 (see `uniform_task_rate`), and the
    margin 1 − share is how far Poisson bursts of an honest origin may go before a token
    bucket at μ/n refuses one.
    """
    if devices <= 1 or layers == 0:
        return 0.0
    _check_proposers(devices, proposers)
    per_prompt = inferences_per_prompt(layers, proposers)
    return devices * proposers * layers / ((devices - 1) * per_prompt)


@attrs.frozen
class QueuePrediction:
    """Mean queue and delay of one device; `model` names the (approximate) queueing model."""

    model: str
    rho: float
    mean_in_system: float  # E[N]: waiting plus in service
    mean_waiting: float  # E[Nq]
    mean_wait_s: float  # E[Wq], time in queue before service
    mean_sojourn_s: float  # E[T] = E[Wq] + α


def mm1(alpha: float, arrival_rate: float) -> QueuePrediction:
    """M/M/1 (Poisson arrivals, exponential service): E[N] = ρ/(1−ρ). Approximate here.

    A device's arrivals are not Poisson (tasks come in bursts of layers), so this is an
    approximation; it is exact for the model it names. Infinite at ρ ≥ 1.
    """
    return mg1(alpha, alpha * alpha, arrival_rate, model="M/M/1")


def mg1(
    alpha: float, service_var_s2: float, arrival_rate: float, model: str = "M/G/1"
) -> QueuePrediction:
    """M/G/1 by Pollaczek–Khinchine: E[Wq] = λ·E[S²]/(2(1−ρ)). Approximate here (see `mm1`)."""
    rho = alpha * arrival_rate
    if rho >= 1.0:
        return QueuePrediction(model, rho, math.inf, math.inf, math.inf, math.inf)
    second_moment = service_var_s2 + alpha * alpha
    wait = arrival_rate * second_moment / (2.0 * (1.0 - rho))
    waiting = arrival_rate * wait  # Little's law
    return QueuePrediction(model, rho, waiting + rho, waiting, wait, wait + alpha)


def query_latency_estimate(sojourn_s: float, layers: int) -> float:
    """Rough end-to-end latency of one query: (M+1) sequential sojourns. Approximate.

    Each layer waits for the slowest of k+1 parallel inferences, so this mean-based figure
    is a lower estimate; network time is not included.
    """
    return (layers + 1) * sojourn_s


def _check_proposers(n: int, proposers: int) -> None:
    if not 0 <= proposers <= n - 1:
        raise ValueError(
            f"k = {proposers} proposers need at least {proposers + 1} devices, n = {n}"
        )
