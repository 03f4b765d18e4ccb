"""The MoA query lifecycle on the in-memory overlay with fake backends, under MockClock."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from dmoa_p2p.backends import (
    BackendError,
    ChatMessage,
    Generation,
    GenerationParams,
    TextCallback,
)
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.moa import (
    Answer,
    FinalStarted,
    LayerDone,
    PeerLoad,
    Plan,
    Progress,
    ProposalReceived,
    QueryRequest,
    Trace,
    plan_layers,
    progress_from_json,
    progress_to_json,
)
from dmoa_p2p.moa.aggregators import MoaAggregator
from dmoa_p2p.node import Node
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.registry import registered
from dmoa_p2p.testing import memory_node, memory_swarm, wait_for


def fakes(n: int, mean_s: float = 1.0) -> list[FakeBackend]:
    return [FakeBackend(mean_s=mean_s, model_name=f"fake{i}") for i in range(n)]


@pytest.mark.parametrize(("layers", "proposers"), [(0, 0), (1, 1), (1, 2), (2, 2), (2, 3)])
async def test_calls_per_query_are_k_plus_one_times_m_plus_one(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, layers: int, proposers: int
) -> None:
    backends = fakes(5)
    async with memory_swarm(tmp_path, backends) as nodes:
        origin = nodes[0]
        answer = await origin.ask(QueryRequest("What is 2+2?", layers, proposers))
        expected = (proposers + 1) * layers + 1
        assert len(answer.trace.calls) == expected
        assert sum(len(b.prompts) for b in backends) == expected
        final = answer.trace.calls[-1]
        assert (final.node, final.role, final.layer) == (origin.peer_id, "aggregator", layers + 1)
        for layer in answer.trace.layers:
            calls = [c for c in answer.trace.calls if c.layer == layer.layer]
            assert {c.node for c in calls} == {origin.peer_id, *layer.asked}
            assert len(set(layer.asked)) == proposers
            assert origin.peer_id not in layer.asked
            assert layer.missing == ()
        assert answer.text.startswith("[fake0 ")  # the origin's model aggregated


class SeedRecorder(FakeBackend):
    """A fake backend that notes the sampling seed of every call."""

    def __init__(self, model_name: str) -> None:
        super().__init__(mean_s=1.0, model_name=model_name)
        self.seeds: list[int | None] = []

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        self.seeds.append(params.seed)
        return await super().generate(messages, params)

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        self.seeds.append(params.seed)
        return await super().generate_stream(messages, params, on_text)


async def test_the_final_answer_takes_the_users_seed_and_proposers_one_each(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With M = 0 any node answers a seeded prompt with that seed (so the same answer);
    proposers get seeds of their own, each other's and the user's differing."""
    backends = [SeedRecorder(f"fake{i}") for i in range(3)]
    async with memory_swarm(tmp_path, backends) as nodes:
        for node in nodes[:2]:
            params = GenerationParams(seed=1234)
            await node.ask(QueryRequest("What is 2+2?", 0, 0, params=params))
        assert backends[0].seeds == backends[1].seeds == [1234]
        await nodes[0].ask(QueryRequest("What is 2+2?", 1, 2, params=GenerationParams(seed=7)))
        proposed = [b.seeds[-1] for b in backends[1:]] + [backends[0].seeds[-2]]
        assert backends[0].seeds[-1] == 7 and len(set(proposed)) == 3 and 7 not in proposed


async def test_augmented_layers_carry_the_previous_answers_and_raw_layers_do_not(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = fakes(4)
    async with memory_swarm(tmp_path, backends) as nodes:
        origin = nodes[0]
        await origin.ask(QueryRequest("Name a colour.", 2, 2, strategy="augmented"))
        layer2_prompts = [p for b in backends for p in b.prompts if len(p) == 2][:3]
        assert len(layer2_prompts) == 3  # origin + 2 proposers got system+user in layer 2
        for system, user in layer2_prompts:
            assert system.role == "system" and "synthesize these responses" in system.content
            assert system.content.count("[fake") == 3  # the three layer-1 proposals
            assert user.content == "Name a colour."
        for backend in backends:
            backend.prompts.clear()
        await origin.ask(QueryRequest("Name a colour.", 2, 2, strategy="raw"))
        proposals = [p for b in backends for p in b.prompts if len(p) == 1]
        assert len(proposals) == 6
        assert all(p[0].content == "Name a colour." for p in proposals)
        final = backends[0].prompts[-1]
        assert final[0].content.count("[fake") == 6  # raw: every layer's proposals at the end


async def test_a_proposer_that_never_answers_does_not_stall_the_layer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = fakes(3)
    backends[2].mean_s = 10_000.0  # this one takes forever
    async with memory_swarm(tmp_path, backends) as nodes:
        origin, _, stuck = nodes
        start = trio.current_time()
        answer = await origin.ask(QueryRequest("Hi", 1, 2, layer_timeout_s=20.0))
        assert trio.current_time() - start < 25.0
        (layer,) = answer.trace.layers
        assert [m.node for m in layer.missing] == [stuck.peer_id]
        assert layer.missing[0].reason == "timed out"
        assert stuck.peer_id not in layer.answered
        assert len(answer.trace.calls) == 3  # origin + one proposer + aggregation


async def test_fewer_peers_than_asked_is_said_in_the_trace(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, fakes(2)) as nodes:
        answer = await nodes[0].ask(QueryRequest("Hi", 1, 3))
        assert len(answer.trace.layers[0].asked) == 1
        assert any("only 1" in note for note in answer.trace.notes), answer.trace.notes


async def test_a_full_queue_refuses_and_the_origin_continues(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = fakes(2, mean_s=5.0)
    async with memory_swarm(tmp_path, backends, queue_capacity=1) as nodes:
        origin, busy = nodes
        async with trio.open_nursery() as nursery:
            # occupy the busy node's only slot with its own user's prompt
            nursery.start_soon(busy.ask, QueryRequest("mine", 0, 0))
            await trio.sleep(0.5)
            answer = await origin.ask(QueryRequest("yours", 1, 1))
        (layer,) = answer.trace.layers
        assert layer.missing[0].node == busy.peer_id
        assert layer.missing[0].reason.startswith("refused: the model's queue is full")
        assert answer.text


async def test_a_proposer_that_leaves_mid_layer_is_replaced(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    leaver_scope = trio.CancelScope()

    async def run_leaver(
        bootstrap: tuple[str, ...], *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with leaver_scope:
            backend = FakeBackend(mean_s=100.0)
            async with memory_node(network, tmp_path / "c", bootstrap, backend) as node:
                task_status.started(node)
                await trio.sleep_forever()

    async with (
        memory_node(network, tmp_path / "a", backend=FakeBackend(1.0)) as origin,
        memory_node(network, tmp_path / "b", origin.listen_addrs, FakeBackend(1.0)) as helper,
        trio.open_nursery() as nursery,
    ):
        leaver: Node = await nursery.start(run_leaver, origin.listen_addrs)
        await wait_for(lambda: origin.live_peer_ids() == {helper.peer_id, leaver.peer_id})

        joined: list[Node] = []

        async def join_then_leave() -> None:
            # a peer not asked yet joins, then the slow proposer leaves: the layer asks the
            # newcomer instead of waiting 100 s for the leaver or going on without it
            await trio.sleep(0.5)
            async with memory_node(
                network, tmp_path / "d", origin.listen_addrs, FakeBackend(1.0)
            ) as newcomer:
                joined.append(newcomer)
                await wait_for(lambda: newcomer.peer_id in origin.live_peer_ids())
                leaver_scope.cancel()
                await trio.sleep_forever()

        nursery.start_soon(join_then_leave)
        start = trio.current_time()
        answer = await origin.ask(QueryRequest("Hi", 1, 2, layer_timeout_s=120.0))
        assert trio.current_time() - start < 10.0
        (layer,) = answer.trace.layers
        (newcomer,) = joined
        assert [(m.node, m.reason) for m in layer.missing] == [
            (leaver.peer_id, "left during the layer")
        ]
        assert layer.replacements == (newcomer.peer_id,)
        assert set(layer.answered) == {origin.peer_id, helper.peer_id, newcomer.peer_id}
        nursery.cancel_scope.cancel()


class FirstProposal(MoaAggregator):
    """A stand-in third-party aggregator that answers without the LLM."""

    def direct_answer(self, prompt: str, proposals: Sequence[str]) -> str | None:
        return proposals[0] if proposals else ""


@pytest.mark.parametrize("aggregator", ["first-proposal", "longest"])
async def test_non_llm_aggregators_answer_without_a_final_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, aggregator: str
) -> None:
    with registered("aggregator", "first-proposal", FirstProposal):
        async with memory_swarm(tmp_path, fakes(3)) as nodes:
            answer = await nodes[0].ask(QueryRequest("Pick one.", 1, 2, aggregator=aggregator))
    assert len(answer.trace.calls) == 3  # proposals only
    assert all(c.role == "proposer" for c in answer.trace.calls)
    assert answer.text.startswith("[fake")


async def test_an_answer_without_the_model_is_cut_at_the_stop_strings_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    params = GenerationParams(max_tokens=64, stop=(" Pick",))
    request = QueryRequest("Pick one.", 1, 2, aggregator="longest", params=params)
    async with memory_swarm(tmp_path, fakes(3)) as nodes:
        answer = await nodes[0].ask(request)
    # the proposals ("[fake… digest] Pick one.") were not cut: the answer is
    assert answer.text.startswith("[fake") and "Pick" not in answer.text


class BreaksMidAnswer(FakeBackend):
    """Streams the start of an answer, then fails (a model that crashes mid-answer)."""

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        on_text("Half an ans")
        raise BackendError("the model crashed")


async def test_an_answer_the_model_broke_off_is_what_the_asker_saw(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [BreaksMidAnswer(mean_s=1.0), *fakes(2)]
    seen: list[str] = []
    async with memory_swarm(tmp_path, backends) as nodes:
        answer = await nodes[0].ask(QueryRequest("Why?", 1, 2), on_text=seen.append)
    assert seen == ["Half an ans"] and answer.text == "Half an ans"
    assert "final aggregation failed mid-answer; the answer is cut short" in answer.trace.notes


async def test_a_refusing_proposer_is_replaced_by_another_peer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = fakes(4, mean_s=5.0)
    backends[1].mean_s = 10_000.0  # the busy node's own prompt holds its only slot
    async with (
        memory_swarm(tmp_path, backends, queue_capacity=1) as nodes,
        trio.open_nursery() as nursery,
    ):
        origin, busy = nodes[0], nodes[1]
        nursery.start_soon(busy.ask, QueryRequest("mine", 0, 0))
        await trio.sleep(0.5)
        # k = 3 with 3 peers: the busy one is asked, refuses, and there is no spare peer
        answer = await origin.ask(QueryRequest("yours", 1, 3))
        (layer,) = answer.trace.layers
        assert [m.node for m in layer.missing] == [busy.peer_id]
        assert layer.missing[0].reason.startswith("refused: ")
        assert layer.replacements == ()
        # k = 1 with the busy node drawn: its refusal is re-routed to a peer not yet asked
        class BusyFirst:
            def plan(
                self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random
            ) -> Plan:
                ordered = sorted(peers, key=lambda peer: peer.peer_id != busy.peer_id)
                return plan_layers(request, ordered, rng, lambda ps, n, _rng: list(ps[:n]))

        with registered("strategy", "busy-first", BusyFirst):
            answer = await origin.ask(QueryRequest("again", 1, 1, strategy="busy-first"))
        (layer,) = answer.trace.layers
        assert layer.asked[0] == busy.peer_id
        assert [m.node for m in layer.missing] == [busy.peer_id]
        assert len(layer.replacements) == 1
        assert layer.answered == (origin.peer_id, layer.replacements[0])
        nursery.cancel_scope.cancel()


async def test_with_no_peers_the_local_model_answers_alone_in_one_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = fakes(1)
    events: list[Progress] = []
    async with memory_swarm(tmp_path, backends) as nodes:
        answer = await nodes[0].ask(QueryRequest("Alone?", 2, 2), on_progress=events.append)
    assert len(backends[0].prompts) == 1  # not a proposal and an aggregation of it
    assert backends[0].prompts[0] == [ChatMessage("user", "Alone?")]
    (call,) = answer.trace.calls
    assert (call.role, answer.trace.layers) == ("aggregator", ())
    note = "no peers available: the local model answers alone (M=0, not 2)"
    assert note in answer.trace.notes
    assert events == [FinalStarted(0, note)]
    assert answer.trace.to_json()["calls"][0]["layer"] == "final"


async def test_progress_reports_every_layer_and_proposal_then_the_final_step(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[Progress] = []
    async with memory_swarm(tmp_path, fakes(3)) as nodes:
        origin = nodes[0]
        await origin.ask(QueryRequest("Why?", 2, 2), on_progress=events.append)
    kinds = [type(e).__name__ for e in events]
    layer = ["LayerStarted", *["ProposalReceived"] * 3, "LayerDone"]
    assert kinds == [*layer, *layer, "FinalStarted"]
    received = [e for e in events if isinstance(e, ProposalReceived)]
    assert [e.answered for e in received] == [1, 2, 3, 1, 2, 3]
    assert origin.peer_id in {e.node for e in received[:3]}
    assert events[4] == LayerDone(1, 2, 3, 3, 0)
    assert events[-1] == FinalStarted(3)
    assert all(progress_from_json(progress_to_json(e)) == e for e in events)


class LengthCutFake(FakeBackend):
    """A fake backend whose every answer says it was cut at max_tokens."""

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        return attrs.evolve(await super().generate(messages, params), finish_reason="length")

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        generation = await super().generate_stream(messages, params, on_text)
        return attrs.evolve(generation, finish_reason="length")


@pytest.mark.parametrize("cut", [False, True])
async def test_the_final_calls_finish_reason_is_the_answers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, cut: bool
) -> None:
    backends = [LengthCutFake() if cut else FakeBackend(), FakeBackend()]
    async with memory_swarm(tmp_path, backends) as nodes:
        answer = await nodes[0].ask(QueryRequest("Long?", 1, 1))
    assert answer.finish_reason == ("length" if cut else "stop") and answer.truncated == cut
    data = answer.to_json()
    assert (data["finish_reason"], data["truncated"]) == (answer.finish_reason, cut)
    assert Answer.from_json(data) == answer


async def test_a_json_trace_names_the_final_aggregation_and_reads_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, fakes(3)) as nodes:
        answer = await nodes[0].ask(QueryRequest("Why?", 2, 2))
    layers = [call["layer"] for call in answer.trace.to_json()["calls"]]
    assert sorted(layers, key=str) == [1, 1, 1, 2, 2, 2, "final"]
    assert answer.trace.calls[-1].layer == 3  # in Python it sorts after the layers
    assert Trace.from_json(answer.trace.to_json()) == answer.trace
