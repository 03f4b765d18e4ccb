"""The HTTP API of real nodes on a localhost swarm, through the official `openai` client."""

from __future__ import annotations

import gc
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from dmoa_p2p.bench import run_http_bench
from dmoa_p2p.swarm import open_inprocess_swarm
from dmoa_p2p.testing import wait_for

pytestmark = pytest.mark.integration
FAKE = {"backend": "fake", "backend_options": {"service_time": "0.2"}}
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Why is the sky blue?"}]


def client_for(url: str, **options: Any) -> openai.AsyncOpenAI:
    # max_retries=0: the tests look at refusals themselves
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, **options)


def stream_pieces(url: str, model: str) -> list[tuple[float, str]]:
    """A streamed completion's text pieces and when each arrived.

    With the synchronous client, in a thread: the async client leaves async generators
    unfinished after [DONE], which trio reports as a ResourceWarning.
    """
    pieces = []
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(model=model, messages=QUESTION, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append((time.monotonic(), chunk.choices[0].delta.content))
    return pieces


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics")
    response.raise_for_status()
    return samples(response.text)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """pytest's heap beyond the collector, as `dmoa-p2p node` puts its start-up heap.

    A full collection of this process stops the swarm's loop for 0.2-0.3 s, which bunches
    the streamed words the test times.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("frozen_heap")
async def test_completions_streams_models_and_metrics_on_a_real_swarm(tmp_path: Path) -> None:
    async with open_inprocess_swarm(
        3, tmp_path, presence_interval_s=0.5, http="127.0.0.1:0", **FAKE
    ) as swarm:
        await swarm.wait_converged(timeout_s=20)
        url = swarm.members[0].http_urls[0]
        assert url.startswith("http://127.0.0.1:")
        client = client_for(url)
        before = await scrape(url)
        with trio.fail_after(30):
            completion = await client.chat.completions.create(
                model="dmoa", messages=QUESTION, extra_body={"include_trace": True}
            )
            pieces = await trio.to_thread.run_sync(stream_pieces, url, "dmoa:layers=1,proposers=2")
            models = await client.models.list()
        after = await scrape(url)
        await client.close()
    text = completion.choices[0].message.content
    assert text and text.startswith("[fake ")
    assert completion.usage is not None and completion.usage.total_tokens > 0
    trace = (completion.model_extra or {})["trace"]
    assert len(trace["calls"]) == 4 and trace["origin"] == swarm.nodes[0].peer_id
    # the aggregation's words arrive while it runs (0.2 s), not all at its end
    assert "".join(p for _, p in pieces) == text
    assert len(pieces) > 3 and pieces[-1][0] - pieces[0][0] > 0.1
    assert {m.id for m in models.data} >= {"dmoa", "fake", "dmoa:strategy=raw"}

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert moved("dmoa_prompts_total", outcome="answered") == 2
    assert moved("dmoa_inferences_total", result="served") == 4
    assert moved("dmoa_layer_latency_seconds_count", layer="final") == 2
    assert moved("dmoa_http_requests_total", route="/v1/chat/completions", status="200") == 2
    assert after[("dmoa_peers", ())] == 2
    assert moved("dmoa_messages_accepted_total") > 0


async def test_overload_is_refused_with_retry_after_and_bad_requests_get_400(
    tmp_path: Path,
) -> None:
    slow = {"backend": "fake", "backend_options": {"service_time": "3.0"}}
    async with open_inprocess_swarm(
        2, tmp_path, presence_interval_s=0.5, http="127.0.0.1:0",
        admission="cap", admission_options={"cap": "1"}, **slow,
    ) as swarm:
        await swarm.wait_converged(timeout_s=20)
        url = swarm.members[0].http_urls[0]
        client = client_for(url)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: client.chat.completions.create(model="fake", messages=QUESTION)
                )
                node = swarm.nodes[0]
                await wait_for(lambda: node.queue.length == 1)  # it holds the node's queue
                with pytest.raises(openai.RateLimitError) as refused:
                    await client.chat.completions.create(model="dmoa", messages=QUESTION)
                nursery.cancel_scope.cancel()
            with pytest.raises(openai.BadRequestError) as bad:
                await client.chat.completions.create(
                    model="dmoa", messages=QUESTION, temperature=7
                )
            with pytest.raises(openai.NotFoundError) as unknown:
                await client.chat.completions.create(model="gpt-4o", messages=QUESTION)
            huge = await announce_huge_body(url)
            metrics = await scrape(url)
        await client.close()
    assert refused.value.status_code == 429
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert "this node admits at most 1 prompts at a time" in refused.value.message
    seconds = refused.value.response.headers["retry-after"]
    assert f"retry in {seconds} s" in refused.value.message
    assert (bad.value.status_code, bad.value.param, bad.value.type) == (
        400, "temperature", "invalid_request_error"
    )
    assert unknown.value.code == "model_not_found"
    assert huge.startswith(b"HTTP/1.1 413 ") and b'"message":' in huge
    assert metrics[("dmoa_prompts_total", (("outcome", "refused"),))] == 1
    assert metrics[("dmoa_http_requests_total", (("route", "/v1/chat/completions"),
                                                 ("status", "429")))] == 1


async def test_a_client_that_leaves_cancels_its_query(tmp_path: Path) -> None:
    slow = {"backend": "fake", "backend_options": {"service_time": "5.0"}}
    async with open_inprocess_swarm(1, tmp_path, http="127.0.0.1:0", **slow) as swarm:
        node, url = swarm.nodes[0], swarm.members[0].http_urls[0]
        body = {"model": "fake", "messages": QUESTION}
        async with httpx.AsyncClient(base_url=url) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json=body, timeout=0.5)
            await wait_for(lambda: node.outcomes["cancelled"] == 1, timeout_s=3)
        data = json.dumps({**body, "stream": True}).encode()
        async with await raw_connection(url) as raw:
            await raw.send_all(request_head(len(data)) + data)
            # the response starts with the first word: once the model has finished the call
            # it was making for the query that was cancelled (5 s), 0.7 s into this one's
            with trio.fail_after(10):
                answer = b""
                while b"data: " not in answer:
                    answer += await raw.receive_some()
        await wait_for(lambda: node.outcomes["cancelled"] == 2, timeout_s=3)
        assert node.outcomes == {"accepted": 2, "cancelled": 2}
        assert node.queue.length <= 1  # the model finishes its current call; nothing waits


async def test_openai_edges_through_the_official_client(tmp_path: Path) -> None:
    """One model by id, stop, refused fields, a refused stream before any 200, /health and
    /status without a Bearer header, on a real server with an API key."""
    slow = {"backend": "fake", "backend_options": {"service_time": "2.0"}}
    async with open_inprocess_swarm(
        1, tmp_path, http="127.0.0.1:0", http_api_key="s3cret",
        admission="cap", admission_options={"cap": "1"}, **slow,
    ) as swarm:
        url, node = swarm.members[0].http_urls[0], swarm.nodes[0]
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        with trio.fail_after(30):
            model = await client.models.retrieve("dmoa:layers=2,proposers=1")
            with pytest.raises(openai.NotFoundError) as unknown:
                await client.models.retrieve("gpt-4o")
            cut = await client.chat.completions.create(
                model="fake", messages=QUESTION, stop=["sky", "never"]
            )
            with pytest.raises(openai.BadRequestError) as tools:
                await client.chat.completions.create(
                    model="fake", messages=QUESTION,
                    tools=[{"type": "function", "function": {"name": "lookup"}}],
                )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: client.chat.completions.create(model="fake", messages=QUESTION)
                )
                await wait_for(lambda: node.queue.length == 1)
                refused = await trio.to_thread.run_sync(refused_stream, url)
                nursery.cancel_scope.cancel()
            async with httpx.AsyncClient(base_url=url) as http:
                health = await http.get("/health")
                page = await http.get("/status", params={"key": "s3cret"},
                                      headers={"Accept": "text/html"})
                closed = await http.get("/status")
        await client.close()
    assert model.id == "dmoa:layers=2,proposers=1"
    assert (model.model_extra or {})["dmoa"]["layers"] == 2
    assert unknown.value.code == "model_not_found"
    content = cut.choices[0].message.content
    assert content is not None and content.endswith("] Why is the ")  # before "sky"
    assert cut.choices[0].finish_reason == "stop"
    assert (tools.value.param, tools.value.code) == ("tools", "unsupported_parameter")
    assert refused.status_code == 429 and refused.code == "cap"
    assert refused.response.headers["content-type"] == "application/json"
    assert f"retry in {refused.response.headers['retry-after']} s" in refused.message
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert page.status_code == 200 and node.peer_id in page.text
    assert closed.status_code == 401


def refused_stream(url: str) -> openai.RateLimitError:
    """The error a streamed completion gets from the synchronous client (see stream_pieces)."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0) as client:
        try:
            client.chat.completions.create(model="fake", messages=QUESTION, stream=True)
        except openai.RateLimitError as exc:
            return exc
    raise AssertionError("the stream was not refused")


def request_head(content_length: int) -> bytes:
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()


async def raw_connection(url: str) -> trio.SocketStream:
    """A plain TCP connection: httpx leaves async generators unfinished when a test hangs up."""
    return await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def announce_huge_body(url: str) -> bytes:
    """The answer to a request that announces a 5 MiB body (refused before it is sent)."""
    async with await raw_connection(url) as stream:
        await stream.send_all(request_head(5 << 20))
        answer = b""
        while b"}}" not in answer:
            chunk = await stream.receive_some()
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package")
async def test_the_status_page_shows_the_peers_in_chromium(tmp_path: Path) -> None:
    async with open_inprocess_swarm(
        3, tmp_path, presence_interval_s=0.5, http="127.0.0.1:0", **FAKE
    ) as swarm:
        await swarm.wait_converged(timeout_s=20)
        url = swarm.members[1].http_urls[0]
        command = [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom", f"{url}/status",
        ]
        with trio.fail_after(60):
            result = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    dom = result.stdout.decode()
    assert '<table id="peers">' in dom
    for node in swarm.nodes:
        assert node.peer_id in dom
    assert f"{swarm.nodes[1].peer_id} (this node)" in dom


def free_port_pair() -> int:
    """A port P with P and P+1 both free just now."""
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


async def test_the_swarm_command_serves_the_api_on_every_node(tmp_path: Path) -> None:
    base = free_port_pair()
    command = [
        sys.executable, "-m", "dmoa_p2p", "swarm", "--nodes", "2", "--backend", "fake",
        "-o", "service_time=0.05", "--http-base-port", str(base), "--duration", "30",
        "--base-dir", str(tmp_path), "--json",
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        report = await _read_json(process.stdout)
        urls = sorted(url for node in report["nodes"] for url in node["http"])
        assert urls == [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
        for url in urls:
            client = client_for(url)
            with trio.fail_after(20):
                answer = await client.chat.completions.create(model="dmoa", messages=QUESTION)
            await client.close()
            assert answer.choices[0].message.content
    finally:
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            await process.wait()


async def _read_json(stream: trio.abc.ReceiveStream) -> Any:
    data = b""
    with trio.fail_after(60):
        while True:
            chunk = await stream.receive_some()
            assert chunk, "the swarm command ended before printing its nodes"
            data += chunk
            try:
                return json.loads(data)
            except ValueError:
                continue


async def test_the_http_bench_compares_the_api_with_direct_calls(tmp_path: Path) -> None:
    done: list[int] = []
    result = await run_http_bench(
        requests=8, layers=1, proposers=1, rounds=2, base_dir=tmp_path, progress=done.append
    )
    data = result.to_json()
    assert done == [4, 8]
    assert set(data["variants"]) == {"direct", "asgi", "bare-http", "http", "http-stream"}
    for variant in data["variants"].values():
        assert variant["requests"] == 8
        assert variant["p50_ms"] >= 10.0  # at least the fake model's service time
        assert variant["p99_ms"] >= variant["p50_ms"]
    assert set(data["added_p50_ms"]) == {"asgi", "bare-http", "http", "http-stream"}
    assert data["passed"] == (data["added_p50_ms"]["http"] <= 5.0)
