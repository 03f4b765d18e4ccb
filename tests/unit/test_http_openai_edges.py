"""The HTTP API's OpenAI edges: stop, refused fields, one model, /health, the key in the address."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.types import Message

from dmoa_p2p.backends import ChatMessage, Generation, GenerationParams, TextCallback
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.http import NodeMetrics, build_app
from dmoa_p2p.testing import memory_swarm
from tests.unit.test_http_app import ASK, LOCAL, api, events, samples

STOPS = ["sky", "never there"]


class RecordingBackend(FakeBackend):
    """The fake model, keeping the parameters of every call it served."""

    def __init__(self, mean_s: float) -> None:
        super().__init__(mean_s=mean_s)
        self.params: list[GenerationParams] = []

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        self.params.append(params)
        return await super().generate(messages, params)

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        self.params.append(params)
        return await super().generate_stream(messages, params, on_text)


async def test_stop_cuts_the_answer_whole_and_streamed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = RecordingBackend(mean_s=0.2)
    async with memory_swarm(tmp_path, [backend]) as (node,), api(node) as client:
        whole = await client.post("/v1/chat/completions", json={**LOCAL, "stop": STOPS})
        streamed = await client.post(
            "/v1/chat/completions", json={**LOCAL, "stop": "sky", "stream": True}
        )
        plain = await client.post("/v1/chat/completions", json=LOCAL)
        cut = await client.post("/v1/chat/completions", json={**LOCAL, "max_tokens": 2})
    (choice,) = whole.json()["choices"]
    text = choice["message"]["content"]
    assert text.startswith("[fake ") and text.endswith("] Why is the ")  # before "sky"
    assert choice["finish_reason"] == "stop"
    chunks = events(streamed.text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert plain.json()["choices"][0]["message"]["content"].endswith("sky blue?")
    assert cut.json()["choices"][0]["finish_reason"] == "length"
    assert [p.stop for p in backend.params] == [tuple(STOPS), ("sky",), (), ()]


async def test_stop_reaches_the_final_aggregation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [RecordingBackend(mean_s=0.2) for _ in range(3)]
    async with memory_swarm(tmp_path, backends) as nodes, api(nodes[0]) as client:
        response = await client.post(
            "/v1/chat/completions", json={**ASK, "stop": STOPS, "include_trace": True}
        )
    roles = [c["role"] for c in response.json()["trace"]["calls"] if c["node"] == nodes[0].peer_id]
    assert roles[-1] == "aggregator"
    assert backends[0].params[-1].stop == tuple(STOPS)  # the origin's last call: the final one


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("tools", [{"type": "function", "function": {"name": "f"}}], "unsupported_parameter"),
        ("response_format", {"type": "json_object"}, "unsupported_parameter"),
        ("logprobs", True, "unsupported_parameter"),
        ("n", 2, "unsupported_parameter"),
        ("top_k", 40, "unknown_parameter"),
    ],
)
async def test_fields_the_node_cannot_honour_are_a_400_naming_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, field: str, value: Any, code: str
) -> None:
    async with memory_swarm(tmp_path, [FakeBackend()]) as (node,), api(node) as client:
        response = await client.post("/v1/chat/completions", json={**ASK, field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (field, code, "invalid_request_error")
    assert field in error["message"]
    assert node.outcomes == {}  # refused before admission: nothing counted, nothing run


async def test_one_model_by_id(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with memory_swarm(tmp_path, [FakeBackend()]) as (node,), api(node) as client:
        listed = (await client.get("/v1/models")).json()["data"]
        found = [(await client.get(f"/v1/models/{m['id']}")).json() for m in listed]
        deeper = await client.get("/v1/models/dmoa:layers=3,proposers=1")
        unknown = await client.get("/v1/models/gpt-4o")
        malformed = await client.get("/v1/models/dmoa:depth=2")
        counted = samples((await client.get("/metrics")).text)
    assert found == listed
    assert deeper.status_code == 200
    assert deeper.json()["id"] == "dmoa:layers=3,proposers=1"
    assert (deeper.json()["dmoa"]["layers"], deeper.json()["dmoa"]["proposers"]) == (3, 1)
    for response in (unknown, malformed):
        assert response.status_code == 404
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "model_not_found" and error["param"] == "model"
    route = (("route", "/v1/models/{id}"), ("status", "404"))
    assert counted[("dmoa_http_requests_total", route)] == 2  # one label for every id


async def test_health_needs_no_key_and_says_when_the_server_stops(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, [FakeBackend(), FakeBackend()]) as nodes:
        app = build_app(nodes[0], NodeMetrics(nodes[0]), "s3cret")
        async with api(nodes[0], "s3cret") as client:
            client.headers.pop("Authorization")
            up = await client.get("/health")
            async with trio.open_nursery() as nursery:
                lifespan = Lifespan(app)
                nursery.start_soon(lifespan.run)
                await lifespan.say("startup")
                during = await call(app, "/health")
                await lifespan.say("shutdown")
            after = await call(app, "/health")
    assert up.status_code == 200
    assert up.json() == {
        "status": "ok",
        "peer_id": nodes[0].peer_id,
        "model": "fake",
        "peers": 1,
        "queue": {"length": 0, "capacity": 64},
    }
    assert during == (200, "ok")
    assert after == (503, "stopping")


class Lifespan:
    """The ASGI lifespan protocol, as a server drives it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.to_app, self._inbox = trio.open_memory_channel[Message](math.inf)
        self._outbox, self.from_app = trio.open_memory_channel[Message](math.inf)

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        await self.app(scope, self._inbox.receive, self._outbox.send)

    async def say(self, event: str) -> None:
        await self.to_app.send({"type": f"lifespan.{event}"})
        assert (await self.from_app.receive())["type"] == f"lifespan.{event}.complete"


async def call(app: Any, path: str) -> tuple[int, str]:
    """One GET through the app itself, whose lifespan the test drives."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        response = await client.get(path)
    return response.status_code, response.json()["status"]


async def test_the_status_page_opens_with_the_key_in_its_address(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm(tmp_path, [FakeBackend()]) as (node,), api(node, "s3 cret") as client:
        client.headers.pop("Authorization")
        browser = {"Accept": "text/html"}
        page = await client.get("/status", params={"key": "s3 cret"}, headers=browser)
        json_link = await client.get("/status", params={"format": "json", "key": "s3 cret"})
        metrics = await client.get("/metrics", params={"key": "s3 cret"})
        wrong = await client.get("/status", params={"key": "nope"}, headers=browser)
        bare = await client.get("/status", headers=browser)
        posted = await client.post(
            "/v1/chat/completions", params={"key": "s3 cret"}, json=LOCAL
        )
        models = await client.get("/v1/models", params={"key": "s3 cret"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert 'href="/status?format=json&amp;key=s3+cret"' in page.text
    assert 'href="/metrics?key=s3+cret"' in page.text
    assert json_link.json()["peer_id"] == node.peer_id
    assert metrics.status_code == 200
    for refused in (wrong, bare, posted, models):  # a key in the address opens pages only
        assert refused.status_code == 401
        assert "?key=" in refused.json()["error"]["message"]
