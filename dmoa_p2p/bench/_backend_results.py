"""What `bench backend` measured: timed calls per path, their medians and the queue/bare ratios."""

from __future__ import annotations

import math
import statistics
from typing import Any

import attrs

BACKEND = "llama-cpp"
BARE_PATH = "bare"
QUEUE_PATH = "queue"
PATHS = (BARE_PATH, QUEUE_PATH)
METRICS = ("prompt_tok_per_s", "generation_tok_per_s")  # wall clock: the verdict
CPU_METRICS = ("prompt_tok_per_cpu_s", "generation_tok_per_cpu_s")  # without waits for a core
TIMED_FIELDS = ("prompt_s", "short_full_s", "generation_s", *METRICS, *CPU_METRICS)
TARGET_RATIO = 0.95
SEED = 1234

BACKEND_METHOD = (
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
BACKEND_BARE_MEANS = (
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
        bare = {run.repeat: getattr(run, metric) for run in self.path_runs(BARE_PATH)}
        return [
            getattr(run, metric) / bare[run.repeat]
            for run in self.path_runs(QUEUE_PATH)
            if run.repeat in bare
        ]

    def ratio(self, metric: str) -> float:
        return _median(self.paired_ratios(metric))

    def ratio_of_medians(self, metric: str) -> float:
        return self.median(QUEUE_PATH, metric) / self.median(BARE_PATH, metric)

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
            "method": BACKEND_METHOD,
            "bare_means": BACKEND_BARE_MEANS,
            "paths": paths,
            "ratio": {m: _rounded(self.ratio(m)) for m in METRICS},
            "ratio_per_repeat": {m: [_rounded(r) for r in self.paired_ratios(m)] for m in METRICS},
            "ratio_of_medians": {m: _rounded(self.ratio_of_medians(m)) for m in METRICS},
            "cpu_ratio": {m: _rounded(self.ratio(m)) for m in CPU_METRICS},
            "target_ratio": self.target_ratio,
            "same_tokens": self.same_tokens,
            "same_text": self.same_text,
            "pass": self.passed,
        }


def _median(values: list[float]) -> float:
    """Median of the values that are numbers (a run that generated nothing has a nan rate)."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.median(numbers) if numbers else math.nan


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if tokens > 0 and seconds > 0 else math.nan


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
