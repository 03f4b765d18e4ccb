"""Admission policies on synthetic operating points, and refusals counted by a real node."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.admission import (
    AdmissionContext,
    AdmissionRefused,
    CapAdmission,
    DegradeAdmission,
    NoAdmission,
    OperatingPoint,
    ThresholdAdmission,
    candidate_configurations,
    projected_rho,
)
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.config import ConfigError
from dmoa_p2p.moa import PeerLoad, QueryRequest
from dmoa_p2p.node import load_admission
from tests.unit.memory_nodes import memory_swarm


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


def test_threshold_refuses_at_rho_max_with_a_retry_after() -> None:
    request = QueryRequest("q", 2, 2)
    policy = ThresholdAdmission(rho_max=0.9)
    assert policy.decide(context(request, point(4, 1.0, 0.1))).action == "accept"
    decision = policy.decide(context(request, point(4, 1.0, 0.13), queue=3))  # ρ = 0.91
    assert decision.action == "refuse"
    assert "ρ = 0.91" in decision.reason
    assert decision.retry_after_s == pytest.approx(3.0)


def test_degrade_picks_the_largest_configuration_below_rho_max() -> None:
    request = QueryRequest("q", 2, 2)
    # λ=0.2, α=1: (2,2) → 1.4, (2,1) → 1.0, (1,2) → 0.8 < 0.9
    decision = DegradeAdmission(rho_max=0.9).decide(context(request, point(4, 1.0, 0.2)))
    assert decision.action == "degrade"
    assert (decision.request.layers, decision.request.proposers) == (1, 2)
    assert "degraded from M=2, k=2 to M=1, k=2" in decision.reason
    hopeless = DegradeAdmission(rho_max=0.9).decide(context(request, point(4, 1.0, 1.0)))
    assert hopeless.action == "refuse"


def test_cap_and_none() -> None:
    request = QueryRequest("q", 1, 1)
    assert CapAdmission(cap=2).decide(context(request, point(2, 1.0, 9.0), 1)).action == "accept"
    assert CapAdmission(cap=2).decide(context(request, point(2, 1.0, 9.0), 2)).action == "refuse"
    assert CapAdmission().decide(context(request, point(2, 1.0, 9.0), 8)).action == "refuse"
    assert NoAdmission().decide(context(request, point(2, 1.0, 9.0), 8)).action == "accept"


def test_admission_options_are_checked() -> None:
    assert load_admission("threshold", {"rho_max": "0.5"}) == ThresholdAdmission(0.5)
    with pytest.raises(ConfigError, match="extra fields"):
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
            with pytest.raises(AdmissionRefused, match=r"queue holds 1 prompts \(cap 1\)"):
                await origin.ask(QueryRequest("second", 0, 0))
        assert origin.outcomes == {"accepted": 1, "answered": 1, "refused": 1}
        assert origin.status()["prompts"] == {"accepted": 1, "answered": 1, "refused": 1}
