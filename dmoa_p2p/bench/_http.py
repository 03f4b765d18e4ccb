"""`bench http`: requests through the HTTP API against calling the node directly, same swarm."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import attrs
import httpx
import trio
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.http import NodeMetrics, bind_http_socket, build_app, hypercorn_config
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import Node
from dmoa_p2p.simulate import percentile
from dmoa_p2p.testing import fake_backend_config, libp2p_swarm

TARGET_ADDED_P50_S = 0.005
PROMPT = "Explain how a first-come, first-served queue works."
MAX_TOKENS = 64
# direct: Node.ask; asgi: the node's HTTP app called in-process (our code, no server, no
# client); bare-http: a one-line starlette endpoint calling Node.ask behind the same
# hypercorn and httpx (what the HTTP stack itself costs); http and http-stream: the API
HTTP_VARIANTS = ("direct", "asgi", "bare-http", "http", "http-stream")
WARMUP = 5

OneRequest = Callable[[], Awaitable[None]]


@attrs.frozen
class VariantLatencies:
    name: str
    latencies_s: tuple[float, ...]

    @property
    def requests_per_s(self) -> float:
        # one request at a time: throughput is the inverse of the mean latency
        return len(self.latencies_s) / sum(self.latencies_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies_s),
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": round(1000 * percentile(self.latencies_s, 0.5), 3),
            "p99_ms": round(1000 * percentile(self.latencies_s, 0.99), 3),
            "mean_ms": round(1000 * statistics.fmean(self.latencies_s), 3),
        }


@attrs.frozen
class HttpBenchResult:
    """Sequential requests, interleaved in rounds: `Node.ask`, then the same through HTTP."""

    layers: int
    proposers: int
    service_time_s: float
    rounds: int
    variants: tuple[VariantLatencies, ...]

    def variant(self, name: str) -> VariantLatencies:
        return next(v for v in self.variants if v.name == name)

    def added_p50_s(self, name: str) -> float:
        return percentile(self.variant(name).latencies_s, 0.5) - percentile(
            self.variant("direct").latencies_s, 0.5
        )

    @property
    def passed(self) -> bool:
        return self.added_p50_s("http") <= TARGET_ADDED_P50_S

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "proposers": self.proposers,
            "nodes": self.proposers + 1,
            "service_time_s": self.service_time_s,
            "rounds": self.rounds,
            "variants": {v.name: v.to_json() for v in self.variants},
            "added_p50_ms": {
                name: round(1000 * self.added_p50_s(name), 3) for name in HTTP_VARIANTS[1:]
            },
            "target": f"http adds at most {1000 * TARGET_ADDED_P50_S:.0f} ms at p50",
            "passed": self.passed,
        }


def _model(layers: int, proposers: int, local_model: str) -> str:
    return local_model if layers == 0 else f"dmoa:layers={layers},proposers={proposers}"


def _requests(
    node: Node, client: httpx.AsyncClient, bare: httpx.AsyncClient, request: QueryRequest
) -> dict[str, OneRequest]:
    body = {
        "model": _model(request.layers, request.proposers, node.backend.model_name),
        "messages": [{"role": "user", "content": request.prompt}],
        "max_tokens": request.params.max_tokens,
    }

    async def direct() -> None:
        await node.ask(request)

    asgi = _asgi_call(node, json.dumps(body).encode())

    async def bare_http() -> None:
        response = await bare.post("/ask", json=body)
        response.raise_for_status()
        response.json()

    async def whole() -> None:
        response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        response.json()

    async def streamed() -> None:
        stream = {**body, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
            response.raise_for_status()
            async for _line in response.aiter_lines():
                pass

    return {
        "direct": direct,
        "asgi": asgi,
        "bare-http": bare_http,
        "http": whole,
        "http-stream": streamed,
    }


def _bare_app(node: Node, request: QueryRequest) -> ASGIFramework:
    """The least an HTTP endpoint over the node can do: read the body, ask, answer JSON."""

    async def ask(http_request: Request) -> JSONResponse:
        await http_request.body()
        answer = await node.ask(request)
        return JSONResponse({"text": answer.text})

    app = Starlette(routes=[Route("/ask", ask, methods=["POST"])])
    return cast(ASGIFramework, app)


def _asgi_call(node: Node, body: bytes) -> OneRequest:
    """One chat completion through the node's ASGI app, called like a server would."""
    app = build_app(node, NodeMetrics(node))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def call() -> None:
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> Message:
            if pending:
                return pending.pop()
            await trio.sleep_forever()  # no disconnect: the client stays
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope), receive, send)
        if statuses != [200]:
            raise RuntimeError(f"the app answered {statuses}")

    return call


async def run_http_bench(
    requests: int,
    layers: int = 0,
    proposers: int = 0,
    service_time_s: float = 0.01,
    rounds: int = 10,
    base_dir: Path | None = None,
    progress: Callable[[int], None] = lambda _done: None,
) -> HttpBenchResult:
    """`requests` per variant on a (k+1)-node fake-backend swarm, in `rounds` blocks each.

    Blocks alternate between the variants (in HTTP_VARIANTS' order, then in reverse) so that
    whatever drifts on the machine falls on all of them alike.
    """
    config = {**fake_backend_config(service_time_s), "http": "127.0.0.1:0"}
    request = QueryRequest(PROMPT, layers, proposers, params=GenerationParams(MAX_TOKENS))
    limits = httpx.Limits(max_keepalive_connections=1)
    async with (
        libp2p_swarm(
            proposers + 1, base_dir, timeout_s=60, presence_interval_s=1.0, **config
        ) as swarm,
        trio.open_nursery() as nursery,
    ):
        node = swarm.nodes[0]
        bare_config = hypercorn_config(bind_http_socket("127.0.0.1:0"))
        bare_urls = await nursery.start(serve, _bare_app(node, request), bare_config)
        async with (
            httpx.AsyncClient(base_url=swarm.members[0].http_urls[0], limits=limits) as client,
            httpx.AsyncClient(base_url=bare_urls[0], limits=limits) as bare,
        ):
            calls = _requests(node, client, bare, request)
            timings = await _measure(calls, requests, rounds, progress)
        nursery.cancel_scope.cancel()
    variants = tuple(VariantLatencies(name, tuple(timings[name])) for name in HTTP_VARIANTS)
    return HttpBenchResult(layers, proposers, service_time_s, rounds, variants)


async def _measure(
    calls: dict[str, OneRequest], requests: int, rounds: int, progress: Callable[[int], None]
) -> dict[str, list[float]]:
    """Warm every variant up, then time `requests` of each in interleaved blocks."""
    for call in calls.values():
        for _ in range(WARMUP):
            await call()
    timings: dict[str, list[float]] = {name: [] for name in HTTP_VARIANTS}
    per_block = max(1, requests // rounds)
    for r in range(rounds):
        for name in HTTP_VARIANTS if r % 2 == 0 else HTTP_VARIANTS[::-1]:
            for _ in range(per_block):
                start = time.perf_counter()
                await calls[name]()
                timings[name].append(time.perf_counter() - start)
        progress(len(timings["direct"]))
    return timings
