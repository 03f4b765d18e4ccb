"""The HTTP app on in-memory nodes: completions, SSE, errors, admission, key, metrics, status."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from dmoa_p2p.backends import BackendError, ChatMessage, GenerationParams
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.http import NodeMetrics, build_app
from dmoa_p2p.node import Node
from dmoa_p2p.testing import memory_swarm
from dmoa_p2p.wire import WireError

ASK = {"model": "dmoa", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
LOCAL = {**ASK, "model": "fake"}


@contextlib.asynccontextmanager
async def api(node: Node, api_key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    metrics = NodeMetrics(node)
    node.prompts.answer_listeners.append(metrics.observe)
    transport = httpx.ASGITransport(app=build_app(node, metrics, api_key))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://node", headers=headers
    ) as client:
        yield client


@contextlib.asynccontextmanager
async def swarm_api(
    tmp_path: Path, n: int = 3, service_s: float = 0.2, **config: Any
) -> AsyncIterator[tuple[list[Node], httpx.AsyncClient]]:
    backends = [FakeBackend(mean_s=service_s) for _ in range(n)]
    async with memory_swarm(tmp_path, backends, **config) as nodes, api(nodes[0]) as client:
        yield nodes, client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_completion_with_usage_and_trace(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with swarm_api(tmp_path) as (_nodes, client):
        response = await client.post("/v1/chat/completions", json={**ASK, "include_trace": True})
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == "dmoa"
    assert data["id"].startswith("chatcmpl-")
    (choice,) = data["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    calls = data["trace"]["calls"]
    assert len(calls) == (2 + 1) * 1 + 1
    assert data["usage"]["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls)
    assert data["usage"]["completion_tokens"] == sum(c["completion_tokens"] for c in calls)
    assert data["usage"]["total_tokens"] == sum(
        c["prompt_tokens"] + c["completion_tokens"] for c in calls
    )


def events(body: str) -> list[Any]:
    assert body.endswith("data: [DONE]\n\n")
    lines = [block.removeprefix("data: ") for block in body.split("\n\n") if block]
    return [json.loads(line) for line in lines[:-1]]


async def test_a_streamed_completion_in_openai_chunks(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    ask = {**ASK, "stream": True, "stream_options": {"include_usage": True}, "include_trace": True}
    async with swarm_api(tmp_path) as (_nodes, client):
        response = await client.post("/v1/chat/completions", json=ask)
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = events(response.text)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(pieces) > 3
    closing, usage = chunks[-2], chunks[-1]
    assert closing["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert "".join(pieces).startswith("[fake ")
    assert len(closing["trace"]["calls"]) == 4
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0


async def test_local_model_and_direct_answers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with swarm_api(tmp_path) as (nodes, client):
        local = await client.post("/v1/chat/completions", json={**ASK, "model": "fake"})
        assert nodes[1].queue.served == nodes[2].queue.served == 0  # M = 0: no peer asked
        longest = await client.post(
            "/v1/chat/completions",
            json={**ASK, "stream": True, "dmoa": {"aggregator": "longest"}},
        )
        listed = await client.get("/v1/models")
    assert local.json()["usage"]["prompt_tokens"] > 0
    pieces = [c["choices"][0]["delta"].get("content") for c in events(longest.text)]
    assert len([p for p in pieces if p]) == 1
    ids = [m["id"] for m in listed.json()["data"]]
    assert ids[0] == "dmoa" and "fake" in ids and "dmoa:aggregator=longest" in ids
    model = listed.json()["data"][0]
    assert model["object"] == "model" and model["dmoa"]["proposers"] == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, None),
        (json.dumps({**ASK, "model": "gpt-4o"}).encode(), 404, "model_not_found"),
        (json.dumps({**ASK, "temperature": -1}).encode(), 400, None),
    ],
)
async def test_bad_requests_get_openai_errors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, body: bytes, status: int,
    code: str | None,
) -> None:
    async with swarm_api(tmp_path, n=1) as (nodes, client):
        response = await client.post("/v1/chat/completions", content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    assert nodes[0].outcomes == {}


async def test_refusals_are_429_or_503_with_retry_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with swarm_api(
        tmp_path, n=1, service_s=5.0, admission="cap", admission_options={"cap": "1"}
    ) as (nodes, client), trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(client.post, "/v1/chat/completions", json=LOCAL))
        await trio.sleep(0.5)
        refused = await client.post("/v1/chat/completions", json={**ASK, "stream": True})
    assert refused.status_code == 429  # a stream refused at admission: no 200, no SSE
    assert refused.headers["content-type"] == "application/json"
    error = refused.json()["error"]
    assert error["code"] == "cap" and error["type"] == "rate_limit_error"
    assert error["message"].startswith("this node admits at most 1 prompts at a time")
    assert "swarm" not in error["message"]
    agrees_with_its_message(refused)
    assert nodes[0].outcomes == {"accepted": 1, "answered": 1, "refused": 1}
    for admission in ("cap", "none"):  # a full queue is queue_full whatever the policy
        async with swarm_api(
            tmp_path / admission, n=1, service_s=5.0, queue_capacity=1, admission=admission
        ) as (nodes, client), trio.open_nursery() as nursery:
            post = functools.partial(client.post, "/v1/chat/completions", json=LOCAL)
            nursery.start_soon(post)
            await trio.sleep(0.5)
            full = await client.post("/v1/chat/completions", json=ASK)
        assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
        assert full.json()["error"]["message"].startswith("this node's queue is full")
        agrees_with_its_message(full)
        assert nodes[0].outcomes["refused"] == 1


def agrees_with_its_message(response: httpx.Response) -> None:
    """Retry-After is whole seconds, at least 1, and the message and retry-after-ms say the
    same wait."""
    seconds = int(response.headers["retry-after"])
    assert seconds >= 1
    assert response.headers["retry-after-ms"] == str(seconds * 1000)
    assert response.json()["error"]["message"].endswith(f"; retry in {seconds} s")


async def test_retry_after_rounds_the_wait_up(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The cap policy asks for α·(queue length) = 2.5 s: the client is told 3 s, everywhere."""
    async with swarm_api(
        tmp_path, n=1, service_s=2.5, admission="cap", admission_options={"cap": "1"}
    ) as (nodes, client), trio.open_nursery() as nursery:
        await client.post("/v1/chat/completions", json=LOCAL)  # α = 2.5 s is measured
        nursery.start_soon(functools.partial(client.post, "/v1/chat/completions", json=LOCAL))
        await trio.sleep(0.5)
        refused = await client.post("/v1/chat/completions", json=LOCAL)
    assert nodes[0].queue.load.mean_service_s == pytest.approx(2.5)
    assert refused.headers["retry-after"] == "3"
    agrees_with_its_message(refused)


async def test_the_api_key_is_required_when_set(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        memory_swarm(tmp_path, [FakeBackend(mean_s=0.1)]) as (node,),
        api(node, "s3cret") as client,
    ):
        assert (await client.get("/v1/models")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
            client.headers.pop("Authorization", None)
            client.headers.update(headers)
            response = await client.get("/metrics")
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"


async def test_metrics_follow_the_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with swarm_api(tmp_path) as (nodes, client):
        before = samples((await client.get("/metrics")).text)
        await client.post("/v1/chat/completions", json=ASK)
        with contextlib.suppress(WireError):
            nodes[0].gate.admit(b"\xc1 not msgpack")
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert moved("dmoa_prompts_total", outcome="answered") == 1
    assert moved("dmoa_prompts_total", outcome="accepted") == 1
    assert moved("dmoa_inferences_total", result="served") == 2  # own proposal, aggregation
    assert moved("dmoa_messages_rejected_total", reason="malformed") == 1
    assert moved("dmoa_layer_latency_seconds_count", layer="1") == 1
    assert moved("dmoa_layer_latency_seconds_count", layer="final") == 1
    assert moved("dmoa_query_latency_seconds_count") == 1
    assert moved("dmoa_http_requests_total", route="/v1/chat/completions", status="200") == 1
    assert after[("dmoa_peers", ())] == 2
    assert after[("dmoa_queue_capacity", ())] == 64
    assert after[("dmoa_service_time_seconds", ())] == pytest.approx(0.2)
    assert after[("dmoa_rho_threshold", ())] == 1.0
    assert 0 < after[("dmoa_rho", ())] < 1


async def test_status_as_json_and_as_a_page(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with swarm_api(
        tmp_path, admission="threshold", admission_options={"rho_max": "0.8"}
    ) as (nodes, client):
        data = (await client.get("/status")).json()
        page = await client.get("/status", headers={"Accept": "text/html,*/*"})
        forced = await client.get("/status?format=html")
        bad = await client.get("/status?format=xml")
    assert data["peer_id"] == nodes[0].peer_id
    assert {p["peer_id"] for p in data["peers"]} == {n.peer_id for n in nodes[1:]}
    assert data["plugins"]["admission_options"] == {"rho_max": "0.8"}
    assert data["operating_point"]["rho_threshold"] == 0.8
    assert page.headers["content-type"].startswith("text/html")
    assert forced.text == page.text
    for node in nodes:
        assert node.peer_id in page.text
    assert "threshold 0.80" in page.text
    assert bad.status_code == 400


class BrokenBackend(FakeBackend):
    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Any:
        raise BackendError("the model file vanished")

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: Any
    ) -> Any:
        raise BackendError("the model file vanished")


async def test_a_model_that_cannot_answer_is_503_streamed_or_not(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        memory_swarm(tmp_path, [BrokenBackend()]) as (node,),
        api(node) as client,
    ):
        whole = await client.post("/v1/chat/completions", json=LOCAL)
        streamed = await client.post("/v1/chat/completions", json={**LOCAL, "stream": True})
    for response in (whole, streamed):  # a stream fails before its first text: no 200
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "model_unavailable" and "vanished" in error["message"]
        agrees_with_its_message(response)
