"""`budget`: at most `per_minute` prompts in any minute, refusals with cause "cap"."""

import attrs
import pytest
from dmoa_plugin_template import BudgetAdmission

from dmoa_p2p.admission import AdmissionContext, OperatingPoint
from dmoa_p2p.moa import PeerLoad, QueryRequest
from dmoa_p2p.registry import PluginOptionsError, create_plugin

CONTEXT = AdmissionContext(
    QueryRequest("q"), OperatingPoint((PeerLoad("me"),), None), queue_length=0, queue_capacity=8
)


def at(now: float) -> AdmissionContext:
    return attrs.evolve(CONTEXT, now=now)


def test_refuses_over_budget_until_the_minute_passes() -> None:
    policy = create_plugin("admission", "budget", {"per_minute": "2"})
    assert isinstance(policy, BudgetAdmission)
    assert [policy.decide(at(0.0)).action for _ in range(2)] == ["accept", "accept"]
    refused = policy.decide(at(20.0))
    assert (refused.action, refused.cause) == ("refuse", "cap")
    assert refused.retry_after_s == pytest.approx(40)
    assert refused.refusal().cause == "cap"  # what the node raises: PromptRefused
    # the first two leave the window together, a minute after they came
    assert [policy.decide(at(60.0)).action for _ in range(3)] == ["accept", "accept", "refuse"]


def test_bad_options_are_refused() -> None:
    with pytest.raises(PluginOptionsError, match="did you mean 'per_minute'"):
        create_plugin("admission", "budget", {"per_minut": "2"})
    with pytest.raises(PluginOptionsError, match="per_minute"):
        create_plugin("admission", "budget", {"per_minute": "0"})
    with pytest.raises(PluginOptionsError, match="no option 'admitted'"):
        create_plugin("admission", "budget", {"admitted": "[]"})  # state is not an option
