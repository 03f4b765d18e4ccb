"""The `openai` backend against a tiny HTTP server on 127.0.0.1 that answers canned replies."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs
import pytest
import trio

from dmoa_p2p.backends import BackendBusy, BackendError, ChatMessage, GenerationParams
from dmoa_p2p.backends.openai_http import (
    UNDISCOVERED_MODEL_NAME,
    OpenAIHttpBackend,
    display_name,
    retry_after_s,
)
from dmoa_p2p.registry import PluginOptionsError, create_plugin


def create(options: Mapping[str, str]) -> OpenAIHttpBackend:
    """The `openai` backend as a node builds it: options through the registry, loaded."""
    backend: OpenAIHttpBackend = create_plugin("backend", "openai", options).load()
    return backend

PARAMS = GenerationParams(max_tokens=8, temperature=0.0, seed=3)
HELLO = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello.")]
MODEL_PATH = "/home/someone/models/tiny-chat.Q4_0.gguf"


@attrs.frozen
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        kind = "text/event-stream" if isinstance(self.body, bytes) else "application/json"
        lines = [
            f"HTTP/1.1 {self.status} Canned",
            f"Content-Type: {kind}",
            f"Content-Length: {len(content)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + content


@attrs.frozen
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def completion(text: str, usage: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
        ],
    }
    if usage:
        data["usage"] = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    return data


def sse(*pieces: str, finish_reason: str | None = None) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    if finish_reason is not None:
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]})
    lines = [": keep-alive"] + [f"data: {json.dumps(e)}" for e in events] + ["data: [DONE]"]
    return "\n\n".join(lines).encode() + b"\n\n"


MODELS = Reply(body={"object": "list", "data": [{"id": MODEL_PATH}, {"id": "second"}]})
SCENARIOS: dict[str, Callable[[Request, int], Reply | None]] = {
    # None: close the connection without answering
    "ok": lambda r, n: MODELS if r.path.endswith("/models") else Reply(body=completion("Hello!")),
    "nousage": lambda r, n: Reply(body=completion("Hello there!", usage=False)),
    "busy": lambda r, n: Reply(503, {"error": {"message": "loading"}}, (("Retry-After", "7"),)),
    "ratelimited": lambda r, n: Reply(429, {"error": {"message": "slow down"}}),
    "bad": lambda r, n: Reply(
        400,
        {
            "error": {
                "message": "Requested tokens (5000) exceed context window of 2048",
                "type": "invalid_request_error",
            }
        },
    ),
    "crash": lambda r, n: Reply(500, b"Internal Server Error"),
    "nomodels": lambda r, n: Reply(body={"object": "list", "data": []}),
    "flaky": lambda r, n: None if n < 3 else Reply(body=completion("at last")),
    "stream": lambda r, n: Reply(body=sse("Hel", "lo", "!")),
    "streamcut": lambda r, n: Reply(body=sse("Hel", "lo", finish_reason="length")),
    "garbled": lambda r, n: Reply(body={"unexpected": True}),
}


class CannedHttpServer:
    """Minimal HTTP/1.1: one request per connection, answered by the path's first segment."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Request] = []
        self.delay_s = 0.0

    def base_url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = await _read_request(stream)
            self.requests.append(request)
            scenario = request.path.split("/")[1]
            seen = sum(r.path.split("/")[1] == scenario for r in self.requests)
            reply = SCENARIOS[scenario](request, seen)
            await trio.sleep(self.delay_s)
            if reply is not None:
                await stream.send_all(reply.encode())


async def _read_request(stream: trio.SocketStream) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some()
    head, _, body = data.partition(b"\r\n\r\n")
    start, *fields = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    while len(body) < int(headers.get("content-length", "0")):
        body += await stream.receive_some()
    method, path, _ = start.split(" ")
    return Request(method, path, headers, json.loads(body) if body else None)


@pytest.fixture
async def server(nursery: trio.Nursery) -> CannedHttpServer:
    canned = CannedHttpServer()
    serve = functools.partial(trio.serve_tcp, canned.handle, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    canned.port = listeners[0].socket.getsockname()[1]
    return canned


@contextlib.asynccontextmanager
async def backend_for(
    server: CannedHttpServer, scenario: str, **options: str
) -> AsyncIterator[OpenAIHttpBackend]:
    backend = create({"base_url": server.base_url(scenario), **options})
    try:
        yield backend
    finally:
        await backend.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---- options -----------------------------------------------------------------------------


def test_a_missing_base_url_says_how_to_pass_it() -> None:
    with pytest.raises(BackendError, match=r"-o base_url=http://127\.0\.0\.1:8080/v1"):
        create({})


def test_unknown_options_are_named_with_the_known_ones() -> None:
    with pytest.raises(PluginOptionsError, match=r"'n_threads'.*options: base_url, model, api_key"):
        create({"base_url": "http://127.0.0.1:1/v1", "n_threads": "1"})


@pytest.mark.parametrize(
    "options",
    [{"retries": "many"}, {"retries": "-1"}, {"timeout_s": "0"}, {"context_length": "0"}],
)
def test_bad_values_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(PluginOptionsError):
        create({"base_url": "http://127.0.0.1:1/v1", **options})


def test_the_url_must_be_http() -> None:
    with pytest.raises(BackendError, match="http://"):
        create({"base_url": "127.0.0.1:8080/v1"})


async def test_defaults_and_the_token_estimate() -> None:
    backend = create({"base_url": "http://127.0.0.1:1/v1/", "context_length": "2048"})
    assert backend.base_url == "http://127.0.0.1:1/v1"
    assert (backend.retries, backend.timeout_s, backend.context_length) == (3, 300.0, 2048)
    assert backend.model_name == UNDISCOVERED_MODEL_NAME
    assert backend.count_tokens("") == 1
    assert backend.count_tokens("x" * 400) == 100
    await backend.aclose()


def test_paths_are_shown_as_file_names_and_names_are_capped() -> None:
    assert display_name(MODEL_PATH) == "tiny-chat.Q4_0.gguf"
    assert display_name("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    assert len(display_name("m" * 300)) == 128


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-1", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header) == seconds


# ---- answers -----------------------------------------------------------------------------


async def test_a_completion_discovers_the_model_lazily(server: CannedHttpServer) -> None:
    async with backend_for(server, "ok") as backend:
        assert server.requests == []  # nothing is asked before the first generation
        generation = await backend.generate(HELLO, PARAMS)
        assert (generation.text, generation.finish_reason) == ("Hello!", "length")
        assert (generation.prompt_tokens, generation.completion_tokens) == (11, 2)
        assert backend.model_name == "tiny-chat.Q4_0.gguf"
        await backend.generate(HELLO, PARAMS)
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/ok/v1/models"),
        ("POST", "/ok/v1/chat/completions"),
        ("POST", "/ok/v1/chat/completions"),
    ]
    body = server.requests[1].body
    assert body == {
        "model": MODEL_PATH,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
        ],
        "max_tokens": 8,
        "temperature": 0.0,
        "stream": False,
        "seed": 3,
    }


async def test_a_configured_model_and_key_are_sent(
    server: CannedHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    async with backend_for(server, "ok", model="chosen") as backend:
        assert backend.model_name == "chosen"
        await backend.generate(HELLO, PARAMS)
    async with backend_for(server, "ok", model="chosen", api_key="explicit") as backend:
        await backend.generate(HELLO, PARAMS)
    assert [r.path for r in server.requests] == ["/ok/v1/chat/completions"] * 2
    assert [r.body["model"] for r in server.requests] == ["chosen", "chosen"]
    keys = [r.headers["authorization"] for r in server.requests]
    assert keys == ["Bearer from-env", "Bearer explicit"]


async def test_stop_strings_are_sent_as_openais_stop(server: CannedHttpServer) -> None:
    params = attrs.evolve(PARAMS, stop=("\n\n", "User:"))
    async with backend_for(server, "ok", model="m") as backend:
        await backend.generate(HELLO, params)
        await backend.generate_stream(HELLO, params, lambda _piece: None)
    assert [r.body["stop"] for r in server.requests] == [["\n\n", "User:"]] * 2


async def test_a_streamed_answer_keeps_the_servers_finish_reason(
    server: CannedHttpServer,
) -> None:
    async with backend_for(server, "streamcut", model="m") as backend:
        pieces: list[str] = []
        cut = await backend.generate_stream(HELLO, PARAMS, pieces.append)
    async with backend_for(server, "stream", model="m") as backend:
        whole = await backend.generate_stream(HELLO, PARAMS, pieces.append)
    assert (cut.text, cut.finish_reason) == ("Hello", "length")
    assert (whole.text, whole.finish_reason) == ("Hello!", "stop")  # none sent: "stop"
    assert pieces == ["Hel", "lo", "Hel", "lo", "!"]


async def test_missing_usage_is_estimated(server: CannedHttpServer) -> None:
    async with backend_for(server, "nousage", model="m") as backend:
        generation = await backend.generate(HELLO, PARAMS)
    assert generation.text == "Hello there!"
    assert generation.prompt_tokens == backend.count_tokens("Be brief.") + backend.count_tokens(
        "Say hello."
    )
    assert generation.completion_tokens == backend.count_tokens("Hello there!")


async def test_the_answer_streams_in_pieces(server: CannedHttpServer) -> None:
    async with (
        backend_for(server, "stream", model="m") as backend,
        contextlib.aclosing(backend.stream(HELLO, PARAMS)) as pieces,
    ):
        assert [p async for p in pieces] == ["Hel", "lo", "!"]
    assert server.requests[0].body["stream"] is True


# ---- refusals and failures ---------------------------------------------------------------


async def test_503_is_busy_with_retry_after_and_no_retry(server: CannedHttpServer) -> None:
    async with backend_for(server, "busy", model="m") as backend:
        with pytest.raises(BackendBusy, match="HTTP 503: loading") as caught:
            await backend.generate(HELLO, PARAMS)
    assert caught.value.retry_after_s == 7
    assert len(server.requests) == 1


async def test_429_without_retry_after_is_busy_for_an_unknown_time(
    server: CannedHttpServer,
) -> None:
    async with backend_for(server, "ratelimited", model="m") as backend:
        with pytest.raises(BackendBusy, match="slow down") as caught:
            await backend.generate(HELLO, PARAMS)
    assert caught.value.retry_after_s is None


async def test_a_400_carries_the_servers_message(server: CannedHttpServer) -> None:
    async with backend_for(server, "bad", model="m") as backend:
        with pytest.raises(BackendError, match="HTTP 400: Requested tokens") as caught:
            await backend.generate(HELLO, PARAMS)
        with pytest.raises(BackendError, match="exceed context window"):
            await anext(backend.stream(HELLO, PARAMS))
    assert not isinstance(caught.value, BackendBusy)
    assert server.base_url("bad") in str(caught.value)


@pytest.mark.parametrize(
    ("scenario", "model", "message"),
    [
        ("crash", "m", "HTTP 500: Internal Server Error"),
        ("garbled", "m", "unexpected shape"),
        ("garbled", "", "did not list models the OpenAI way; pass -o model=NAME"),
        ("nomodels", "", "lists no models; pass -o model=NAME"),
    ],
)
async def test_other_failures_say_what_happened(
    server: CannedHttpServer, scenario: str, model: str, message: str
) -> None:
    async with backend_for(server, scenario, model=model) as backend:
        with pytest.raises(BackendError, match=message):
            await backend.generate(HELLO, PARAMS)


async def test_dropped_connections_are_retried(server: CannedHttpServer) -> None:
    backend = OpenAIHttpBackend(server.base_url("flaky"), model="m", retries=2, backoff_s=0.01)
    generation = await backend.generate(HELLO, PARAMS)
    await backend.aclose()
    assert generation.text == "at last"
    assert len(server.requests) == 3


async def test_a_closed_port_is_retried_then_named() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = create({"base_url": url, "model": "m", "retries": "1"})
    with pytest.raises(BackendError, match=rf"cannot reach {url}/chat/completions .*2 attempts"):
        await backend.generate(HELLO, PARAMS)
    await backend.aclose()


async def test_a_slow_server_times_out(server: CannedHttpServer) -> None:
    server.delay_s = 5.0
    async with backend_for(server, "ok", model="m", timeout_s="0.2") as backend:
        with pytest.raises(BackendError, match=r"did not answer within 0\.2 s"):
            await backend.generate(HELLO, PARAMS)
