"""One plugin contract for all kinds: options as attrs fields, checked; one instance per node."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from dmoa_p2p.backends import load_backend
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.gossip import DirectGossip
from dmoa_p2p.moa import PeerLoad, Plan, QueryRequest, plan_layers
from dmoa_p2p.registry import PluginError, PluginOptionsError, create_plugin, registered
from dmoa_p2p.testing import memory_swarm


@attrs.frozen
class Knobs:
    """A stand-in plugin with one option of each kind a field can have."""

    flag: bool = False
    count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    share: float = 0.5
    label: str | None = None


class Bare:
    """A plugin without options may be a plain class."""


@attrs.define
class TunedDirect(DirectGossip):
    """The direct gossip policy with an option (that it ignores)."""

    window: int = 1


def test_options_are_converted_to_the_fields_types() -> None:
    with registered("strategy", "knobs", Knobs):
        built = create_plugin("strategy", "knobs", {"flag": "yes", "count": "3", "share": "0.25"})
        assert built == Knobs(flag=True, count=3, share=0.25, label=None)
        assert create_plugin("strategy", "knobs", {"flag": "off"}).flag is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cuont": "2"}, r"has no option 'cuont' \(did you mean 'count'\?\); its options: flag"),
        ({"count": "0"}, r"'count' must be >= 1"),
        ({"count": "two"}, r"count: expected an integer, got 'two'"),
        ({"flag": "maybe"}, r"'maybe' is not true or false"),
    ],
)
def test_bad_options_are_one_clear_error(options: dict[str, str], message: str) -> None:
    with registered("strategy", "knobs", Knobs), pytest.raises(PluginOptionsError, match=message):
        create_plugin("strategy", "knobs", options)


def test_a_plugin_without_fields_takes_no_options() -> None:
    with registered("gossip", "bare", Bare):
        assert isinstance(create_plugin("gossip", "bare"), Bare)
        with pytest.raises(PluginOptionsError, match="takes no options, got: speed"):
            create_plugin("gossip", "bare", {"speed": "1"})


def test_the_fake_backend_takes_its_options_like_every_plugin() -> None:
    backend = load_backend("fake", {"service_time": "0.5", "model": "f", "context": "64"})
    assert isinstance(backend, FakeBackend)
    assert (backend.mean_s, backend.model_name, backend.context_length) == (0.5, "f", 64)
    with pytest.raises(PluginOptionsError, match="distribution: expected one of fixed, exp"):
        load_backend("fake", {"distribution": "normal"})


async def test_a_mistyped_strategy_is_an_error_and_not_a_counted_prompt(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, [FakeBackend(0.1), FakeBackend(0.1)]) as (node, _):
        with pytest.raises(PluginError, match="no strategy plugin named 'agumented'"):
            await node.ask(QueryRequest("q", strategy="agumented"))
        assert node.outcomes == {}
        assert node.queue.load.arrival_rate == 0.0  # not even offered load


async def test_a_strategy_lives_as_long_as_its_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    class Counting:
        made = 0

        def __init__(self) -> None:
            Counting.made += 1
            self.planned = 0

        def plan(
            self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random
        ) -> Plan:
            self.planned += 1
            return plan_layers(request, peers, rng)

    with registered("strategy", "counting", Counting):
        async with memory_swarm(tmp_path, [FakeBackend(0.1), FakeBackend(0.1)]) as (node, _):
            for _ in range(3):
                await node.ask(QueryRequest("q", 1, 1, strategy="counting"))
            plugins = node.engine.resolve(QueryRequest("q", strategy="counting"))
    assert Counting.made == 1
    assert isinstance(plugins.strategy, Counting) and plugins.strategy.planned == 3


async def test_a_nodes_configuration_gives_every_kind_its_options(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with registered("strategy", "knobs", Knobs), registered("gossip", "tuned", TunedDirect):
        async with memory_swarm(
            tmp_path,
            [FakeBackend(0.1)],
            gossip="tuned",
            gossip_options={"window": "2"},
            strategy_options={"knobs": {"flag": "true"}},
        ) as (node,):
            plugins = node.engine.resolve(QueryRequest("q", strategy="knobs"))
            assert node.gossip == TunedDirect(window=2)
            built: object = plugins.strategy
            assert built == Knobs(flag=True)
