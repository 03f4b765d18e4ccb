"""The control socket's `ask`: streamed progress and text, conversations, cancellation."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dmoa_p2p.backends import ChatMessage
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.control import TEXT_EVENT, ControlError, call_control, serve_control
from dmoa_p2p.http import flatten_messages
from dmoa_p2p.moa import Answer, QueryRequest, conversation_prompt
from dmoa_p2p.node import Node
from dmoa_p2p.testing import memory_swarm, wait_for


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: a unix socket's path must fit in 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="dmoa-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory)


def fakes(n: int, mean_s: float = 1.0) -> list[FakeBackend]:
    return [FakeBackend(mean_s=mean_s, model_name=f"fake{i}") for i in range(n)]


def ask_json(prompt: str, layers: int, proposers: int) -> dict[str, Any]:
    return QueryRequest(prompt, layers, proposers).to_json()


async def serving(nursery: trio.Nursery, node: Node, directory: Path) -> Path:
    path = directory / "control.sock"
    await nursery.start(serve_control, node, path, lambda: {"peer_id": node.peer_id})
    return path


async def test_a_streamed_ask_reports_each_proposal_then_streams_the_answer(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, fakes(3)) as nodes, trio.open_nursery() as nursery:
        path = await serving(nursery, nodes[0], socket_dir)
        events: list[dict[str, Any]] = []
        data = await call_control(path, "ask", events.append, request=ask_json("Why?", 2, 2))
        nursery.cancel_scope.cancel()
    progress = [e for e in events if e["event"] != TEXT_EVENT]
    for layer in (1, 2):
        mine = [e for e in progress if e.get("layer") == layer]
        assert mine[0] == {"event": "layer_started", "layer": layer, "layers": 2, "expected": 3}
        assert [e["answered"] for e in mine if e["event"] == "proposal"] == [1, 2, 3]
        assert mine[-1]["event"] == "layer_done" and mine[-1]["missing"] == 0
    assert progress[-1] == {"event": "final", "proposals": 3, "note": ""}
    texts = [e["text"] for e in events if e["event"] == TEXT_EVENT]
    assert len(texts) > 1 and "".join(texts) == data["answer"]
    assert events.index(progress[-1]) < events.index(next(e for e in events if "text" in e))
    assert (data["finish_reason"], data["truncated"]) == ("stop", False)
    answer = Answer.from_json(data)  # the JSON trace names the aggregation "final"
    assert [c["layer"] for c in data["trace"]["calls"]][-1] == "final"
    assert answer.trace.calls[-1].layer == 3 and answer.to_json() == data


async def test_a_client_that_leaves_cancels_its_query_on_the_node(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = fakes(1, mean_s=100.0)
    async with memory_swarm(tmp_path, backends) as nodes:
        node = nodes[0]
        async with trio.open_nursery() as nursery:
            path = await serving(nursery, node, socket_dir)
            with trio.move_on_after(5.0):  # the asker gives up mid-answer
                await call_control(path, "ask", lambda _e: None, request=ask_json("Hi", 0, 0))
            await wait_for(lambda: node.outcomes["cancelled"] == 1)
            assert node.outcomes["answered"] == 0
            # the call it was in stops at once: the queue is free for the next one
            await wait_for(lambda: node.queue.length == 0, timeout_s=1.0)
            assert node.queue.abandoned == 1
            backends[0].mean_s = 1.0
            data = await call_control(path, "ask", request=ask_json("Next", 0, 0))
            assert data["answer"].endswith("Next") and node.outcomes["answered"] == 1
            nursery.cancel_scope.cancel()


async def test_a_cancel_request_cancels_the_query(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, fakes(1, mean_s=100.0)) as nodes:
        node = nodes[0]
        async with trio.open_nursery() as nursery:
            path = await serving(nursery, node, socket_dir)
            stream = await trio.open_unix_socket(str(path))
            async with stream:
                request = {"op": "ask", "request": ask_json("Hi", 0, 0)}
                await stream.send_all(json.dumps(request).encode() + b"\n")
                await wait_for(lambda: node.queue.length == 1)
                await stream.send_all(b'{"op": "cancel"}\n')
                assert await stream.receive_some() == b""  # the node hung up: no answer
            assert node.outcomes["cancelled"] == 1
            nursery.cancel_scope.cancel()


async def test_a_conversation_is_folded_into_one_prompt_as_over_http(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    backends = fakes(1)
    async with memory_swarm(tmp_path, backends) as nodes, trio.open_nursery() as nursery:
        path = await serving(nursery, nodes[0], socket_dir)
        request = {k: v for k, v in ask_json("-", 0, 0).items() if k != "prompt"}
        await call_control(path, "ask", request={**request, "messages": turns})
        with pytest.raises(ControlError, match=r"messages\[0\]\.role must be one of"):
            await call_control(
                path, "ask", request={**request, "messages": [{"role": "bot", "content": "x"}]}
            )
        with pytest.raises(ControlError, match="prompt or its messages, not both"):
            await call_control(path, "ask", request={**request, "prompt": "a", "messages": turns})
        nursery.cancel_scope.cancel()
    (prompt,) = backends[0].prompts
    assert prompt == [ChatMessage("user", flatten_messages(turns))]
    assert "Conversation so far:" in prompt[0].content


@pytest.mark.parametrize(
    "turns",
    [
        [("user", "Hi")],
        [("system", "S"), ("user", "Hi")],
        [("user", "a"), ("assistant", "b"), ("system", "late"), ("user", "c")],
    ],
)
def test_conversation_prompt_matches_the_http_apis_flattening(turns: list[tuple[str, str]]) -> None:
    messages = [ChatMessage(role, text) for role, text in turns]  # type: ignore[arg-type]
    as_json = [{"role": role, "content": text} for role, text in turns]
    assert conversation_prompt(messages) == flatten_messages(as_json)


def test_a_conversation_must_end_with_a_user_message() -> None:
    with pytest.raises(ValueError, match="must end with a user message"):
        conversation_prompt([ChatMessage("assistant", "hi")])
    with pytest.raises(ValueError, match="last user message is empty"):
        conversation_prompt([ChatMessage("user", "  ")])


async def test_a_client_that_hangs_up_before_its_answer_never_stops_the_node(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, fakes(1, mean_s=0.5)) as nodes:
        node = nodes[0]
        async with trio.open_nursery() as nursery:
            path = await serving(nursery, node, socket_dir)
            for request in (b'{"op": "status"}\n', b"not json\n", b'{"op": "nope"}\n'):
                for _ in range(3):
                    stream = await trio.open_unix_socket(str(path))
                    await stream.send_all(request)
                    await stream.aclose()  # gone before the node answers
                    await trio.sleep(0.01)
            data = await call_control(path, "ask", request=ask_json("Still here?", 0, 0))
            assert data["answer"].endswith("Still here?")
            nursery.cancel_scope.cancel()


async def test_only_the_owner_can_open_the_control_socket(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, fakes(1)) as nodes, trio.open_nursery() as nursery:
        path = await serving(nursery, nodes[0], socket_dir / "new-dir")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        nursery.cancel_scope.cancel()
