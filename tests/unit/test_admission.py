"""Admission policies on synthetic operating points, and refusals counted by a real node."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.admission import (
    AdmissionContext,
    CapAdmission,
    DegradeAdmission,
    EvenShare,
    NoAdmission,
    OperatingPoint,
    PromptRefused,
    ThresholdAdmission,
    candidate_configurations,
    projected_rho,
)
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.moa import PeerLoad, QueryRequest
from dmoa_p2p.node import load_admission
from dmoa_p2p.registry import PluginOptionsError
from dmoa_p2p.testing import memory_swarm


def point(n: int, alpha: float, rate: float) -> OperatingPoint:
    loads = tuple(PeerLoad(f"p{i}", alpha, 0, 8, rate) for i in range(n))
    return OperatingPoint(loads, alpha)


def context(request: QueryRequest, op: OperatingPoint, queue: int = 0) -> AdmissionContext:
    return AdmissionContext(request, op, queue, 8)


def test_candidates_shrink_by_inferences_and_skip_peerless_layers() -> None:
    assert candidate_configurations(2, 2) == [(2, 2), (2, 1), (1, 2), (1, 1), (0, 0)]


def test_projected_rho_is_theorem1_with_equal_devices() -> None:
    # n=4, α=1, λ=0.1, (M,k)=(2,2): ρ = 1·7·0.1
    assert projected_rho(point(4, 1.0, 0.1), 2, 2) == pytest.approx(0.7)
    assert projected_rho(OperatingPoint((PeerLoad("a"),), None), 1, 1) is None


def test_threshold_admits_the_share_of_prompts_that_fits_below_rho_max() -> None:
    request = QueryRequest("q", 2, 2)
    policy = ThresholdAdmission(rho_max=0.9)
    assert policy.decide(context(request, point(4, 1.0, 0.1))).action == "accept"  # ρ = 0.7
    # users offer ρ = 1.8: about every second prompt is admitted, the others refused
    overloaded = context(request, point(4, 1.0, 1.8 / 7), queue=3)
    decisions = [policy.decide(overloaded) for _ in range(100)]
    actions = [d.action for d in decisions]
    assert 49 <= actions.count("accept") <= 50
    assert not any(actions[i : i + 3] == ["refuse"] * 3 for i in range(98))  # evenly spread
    refusal = next(d for d in decisions if d.action == "refuse")
    assert "users ask for ρ = 1.80" in refusal.reason
    assert "each user may send 7.71 prompts a minute" in refusal.reason
    assert "this node's users send 15.4" in refusal.reason
    assert refusal.retry_after_s == pytest.approx(3.0)
    assert refusal.projected_rho == pytest.approx(1.8)


def test_threshold_holds_heavy_users_to_the_fair_rate_and_spares_light_ones() -> None:
    request = QueryRequest("q", 1, 1)

    # n=3, α=1, (M,k)=(1,1): device i gets 2·λ_i + ½·Σ_{j≠i} λ_j; one light user at 0.05
    def heavy_first(own: float) -> OperatingPoint:
        rates = (own, 0.05, 0.6)
        return OperatingPoint(
            tuple(PeerLoad(f"p{i}", 1.0, 0, 8, r) for i, r in enumerate(rates)), 1.0
        )

    light = ThresholdAdmission(rho_max=0.9)
    assert all(
        light.decide(context(request, heavy_first(0.05))).action == "accept" for _ in range(20)
    )
    # heavy users at 0.6 each: the cap c solves 2c + ½(0.05 + c) = 0.9, c = 0.35
    heavy = ThresholdAdmission(rho_max=0.9)
    actions = [heavy.decide(context(request, heavy_first(0.6))).action for _ in range(120)]
    assert 69 <= actions.count("accept") <= 70  # 0.35/0.6 of 120


def test_even_share_spreads_a_share_evenly() -> None:
    share = EvenShare()
    taken = [share.take(0.3) for _ in range(100)]
    assert sum(taken) == 30
    assert all(sum(taken[i : i + 10]) == 3 for i in range(0, 100, 10))
    assert all(EvenShare().take(2.0) for _ in range(3))  # shares are capped at 1
    assert not any(EvenShare().take(-1.0) for _ in range(3))


def test_degrade_mixes_two_sizes_to_meet_the_fair_budget() -> None:
    request = QueryRequest("q", 2, 2)
    # λ=0.2 each, α=1, ρ_max=0.9: the fair rate at (2,2) is 0.9/7, so prompts may average
    # 7·(0.9/7)/0.2 = 4.5 inferences: half (1,2) with 4, half (2,1) with 5
    policy = DegradeAdmission(rho_max=0.9)
    decisions = [policy.decide(context(request, point(4, 1.0, 0.2))) for _ in range(10)]
    sizes = [(d.request.layers, d.request.proposers) for d in decisions]
    assert sizes == [(1, 2), (2, 1)] * 5
    assert all(d.action == "degrade" for d in decisions)
    assert decisions[0].reason == (
        "degraded from M=2, k=2 to M=1, k=2: the swarm's users ask for ρ = 1.40; to keep it "
        "below ρ_max = 0.90 this node's prompts may average 4.5 inferences"
    )
    # the requested size itself can be part of the mix: at λ = 0.14 the budget is 6.43
    # inferences, so 5 prompts in 7 run as asked (7) and 2 with (2,1) (5)
    policy = DegradeAdmission(rho_max=0.9)
    actions = [policy.decide(context(request, point(4, 1.0, 0.14))).action for _ in range(7)]
    assert actions.count("accept") == 5
    assert actions.count("degrade") == 2


def test_degrade_answers_locally_a_share_and_refuses_the_rest() -> None:
    request = QueryRequest("q", 2, 2)
    # λ=1.8 each: budget 7·(0.9/7)/1.8 = 0.5 inferences, half of a local answer
    policy = DegradeAdmission(rho_max=0.9)
    decisions = [policy.decide(context(request, point(4, 1.0, 1.8))) for _ in range(10)]
    assert [d.action for d in decisions] == ["refuse", "degrade"] * 5
    assert (decisions[1].request.layers, decisions[1].request.proposers) == (0, 0)
    assert "may average 0.5 inferences" in decisions[0].reason


def test_degrade_spares_users_below_the_fair_rate() -> None:
    request = QueryRequest("q", 1, 1)
    loads = tuple(PeerLoad(f"p{i}", 1.0, 0, 8, r) for i, r in enumerate((0.05, 0.6, 0.6)))
    policy = DegradeAdmission(rho_max=0.9)
    context_ = context(request, OperatingPoint(loads, 1.0))
    assert all(policy.decide(context_).action == "accept" for _ in range(10))


def test_cap_and_none() -> None:
    request = QueryRequest("q", 1, 1)
    assert CapAdmission(cap=2).decide(context(request, point(2, 1.0, 9.0), 1)).action == "accept"
    assert CapAdmission(cap=2).decide(context(request, point(2, 1.0, 9.0), 2)).action == "refuse"
    assert CapAdmission().decide(context(request, point(2, 1.0, 9.0), 8)).action == "refuse"
    assert NoAdmission().decide(context(request, point(2, 1.0, 9.0), 8)).action == "accept"


def test_admission_options_are_checked() -> None:
    assert load_admission("threshold", {"rho_max": "0.5"}) == ThresholdAdmission(0.5)
    with pytest.raises(PluginOptionsError, match=r"no option 'rho' \(did you mean 'rho_max'\?\)"):
        load_admission("threshold", {"rho": "0.5"})


async def test_a_refused_prompt_is_counted_and_explained(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [FakeBackend(mean_s=5.0) for _ in range(2)]
    async with memory_swarm(
        tmp_path, backends, admission="cap", admission_options={"cap": "1"}
    ) as nodes:
        origin = nodes[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(origin.ask, QueryRequest("first", 0, 0))
            await trio.sleep(0.1)
            with pytest.raises(PromptRefused, match=r"queue holds 1 prompts \(cap 1\)") as info:
                await origin.ask(QueryRequest("second", 0, 0))
            assert info.value.cause == "cap"
        assert origin.outcomes == {"accepted": 1, "answered": 1, "refused": 1}
        snapshot = origin.snapshot()
        assert snapshot.to_json()["prompts"] == {"accepted": 1, "answered": 1, "refused": 1}
        # users offered two prompts, one was admitted: both rates are advertised
        load = origin.queue.load
        assert load.arrival_rate is not None and load.admitted_rate is not None
        assert load.arrival_rate == pytest.approx(2 * load.admitted_rate, rel=0.01)  # 0.1 s apart
        presence = snapshot.presence()
        assert presence.admitted_rate is not None and presence.arrival_rate is not None


def test_degrade_mixes_a_peerless_request_with_local_answers() -> None:
    # (3,0) costs 4 local inferences; at λ = 0.5, α = 1 on 2 devices ρ = 2.0, the fair rate
    # is 0.9/4 = 0.225, so prompts may average 4·0.45 = 1.8: 4 in 15 as asked, 11 local
    policy = DegradeAdmission(rho_max=0.9)
    request = QueryRequest("q", 3, 0)
    decisions = [policy.decide(context(request, point(2, 1.0, 0.5))) for _ in range(15)]
    accepted = [d for d in decisions if d.action == "accept"]
    degraded = [d for d in decisions if d.action == "degrade"]
    assert (len(accepted), len(degraded)) == (4, 11)
    assert all((d.request.layers, d.request.proposers) == (3, 0) for d in accepted)
    assert all((d.request.layers, d.request.proposers) == (0, 0) for d in degraded)


def test_degrade_never_picks_a_smaller_size_that_costs_the_same() -> None:
    # alone (n = 1) k does not count: (2,2) and (2,1) both cost 3, (1,2) and (1,1) both 2
    policy = DegradeAdmission(rho_max=0.9)
    decisions = [
        policy.decide(context(QueryRequest("q", 2, 2), point(1, 1.0, 0.5))) for _ in range(10)
    ]
    sizes = Counter((d.request.layers, d.request.proposers) for d in decisions)
    assert sizes == {(1, 2): 8, (0, 0): 2}  # budget 1.8 = 0.8·2 + 0.2·1


def test_rho_max_must_keep_queues_bounded() -> None:
    for bad in ("0", "1", "1.2", "-0.5"):
        with pytest.raises(PluginOptionsError, match="rho_max must be above 0 and below 1"):
            load_admission("threshold", {"rho_max": bad})
