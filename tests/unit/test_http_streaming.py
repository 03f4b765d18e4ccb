"""Streaming under the HTTP API: backends, the queue and the MoA engine pass text as it comes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.backends import (
    ChatMessage,
    Generation,
    GenerationParams,
    StreamingBackend,
)
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.testing import memory_swarm
from tests.unit.test_openai_backend_unit import HELLO, PARAMS, CannedHttpServer, backend_for

QUESTION = [ChatMessage("user", "Why is the sky blue today?")]


class WholeBackend(FakeBackend):
    """A backend without `generate_stream`, as third-party plugins may be."""

    generate_stream = None  # type: ignore[assignment]


class Timed:
    """Collects text pieces with the (virtual) time each arrived."""

    def __init__(self) -> None:
        self.pieces: list[tuple[float, str]] = []

    def __call__(self, piece: str) -> None:
        self.pieces.append((trio.current_time(), piece))

    @property
    def text(self) -> str:
        return "".join(piece for _, piece in self.pieces)


async def test_the_fake_backend_streams_word_by_word_over_its_service_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(mean_s=1.0)
    assert isinstance(backend, StreamingBackend)
    whole = await backend.generate(QUESTION, GenerationParams())
    timed = Timed()
    start = trio.current_time()
    streamed = await backend.generate_stream(QUESTION, GenerationParams(), timed)
    assert streamed == whole
    assert timed.text == whole.text
    assert len(timed.pieces) == len(whole.text.split(" ")) > 3
    assert timed.pieces[0][0] - start == pytest.approx(1.0 / len(timed.pieces))
    assert timed.pieces[-1][0] - start == pytest.approx(1.0)


async def test_the_queue_streams_or_sends_one_piece_at_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for backend, pieces in ((FakeBackend(mean_s=0.5), "many"), (WholeBackend(mean_s=0.5), "one")):
        queue = InferenceQueue(backend, 4)
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run)
            timed = Timed()
            served = await queue.submit(QUESTION, GenerationParams(), timed)
            plain = await queue.submit(QUESTION, GenerationParams())
            nursery.cancel_scope.cancel()
        assert timed.text == served.generation.text == plain.generation.text
        assert (len(timed.pieces) == 1) == (pieces == "one")
        assert served.service_s == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("layers", "proposers", "aggregator", "streamed_calls"),
    [(0, 0, "moa", 1), (1, 2, "moa", 1), (2, 1, "dmoa-paper", 1), (1, 2, "longest", 0)],
)
async def test_only_the_final_answer_streams(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    layers: int,
    proposers: int,
    aggregator: str,
    streamed_calls: int,
) -> None:
    backends = [FakeBackend(mean_s=0.4) for _ in range(3)]
    async with memory_swarm(tmp_path, backends) as nodes:
        timed = Timed()
        request = QueryRequest("Why is the sky blue?", layers, proposers, aggregator=aggregator)
        started = trio.current_time()
        answer = await nodes[0].ask(request, on_text=timed)
    assert timed.text == answer.text
    first, last = timed.pieces[0][0] - started, timed.pieces[-1][0] - started
    if layers:  # nothing arrives before the last layer is done: proposals are not the answer
        assert first >= 0.4 * layers
    elif streamed_calls:  # the only call streams while it runs
        assert first < 0.4
    if streamed_calls == 0:  # an aggregator that answers without the LLM: one piece
        assert len(timed.pieces) == 1
    else:  # the final call's text arrives while it runs, not at its end
        assert len(timed.pieces) > 3
        assert first < 0.4 * (layers + 1) - 0.2 < last


async def test_a_failed_aggregation_streams_the_fallback(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    class FailsToAggregate(FakeBackend):
        async def generate_stream(
            self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: object
        ) -> Generation:
            raise RuntimeError("out of memory")

    backends = [FailsToAggregate(mean_s=0.1), FakeBackend(mean_s=0.1), FakeBackend(mean_s=0.1)]
    async with memory_swarm(tmp_path, backends) as nodes:
        timed = Timed()
        answer = await nodes[0].ask(QueryRequest("Why?", 1, 2), on_text=timed)
    assert "final aggregation failed" in " ".join(answer.trace.notes)
    assert [piece for _, piece in timed.pieces] == [answer.text] != [""]


@pytest.fixture
async def canned(nursery: trio.Nursery) -> CannedHttpServer:
    server = CannedHttpServer()
    serve = functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    server.port = listeners[0].socket.getsockname()[1]
    return server


async def test_the_openai_backend_streams_the_servers_events(canned: CannedHttpServer) -> None:
    async with backend_for(canned, "stream", model="m") as backend:
        assert isinstance(backend, StreamingBackend)
        pieces: list[str] = []
        generation = await backend.generate_stream(HELLO, PARAMS, pieces.append)
    assert pieces == ["Hel", "lo", "!"]
    assert generation.text == "Hello!"
    assert generation.completion_tokens == backend.count_tokens("Hello!")
    assert canned.requests[0].body["stream"] is True
