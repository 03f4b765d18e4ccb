"""The token loop: the prompt in short chunks, then one token at a time, each a chance to stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence

import attrs
import llama_cpp
from llama_cpp import Llama

from dmoa_p2p.backends import BackendError, Generation

# tokens per llama_decode call while reading the prompt: about 0.3-0.6 s on one core for a
# 135M model, so a cancelled call lets go of the model that soon even with a long prompt
PROMPT_CHUNK = 64
# create_chat_completion's defaults
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
REPEAT_PENALTY = 1.0


# where the answer's text goes while it is generated, in pieces that add up to the answer
TextSink = Callable[[str], None]


class Stopped(Exception):
    """The caller gave up on this generation; nobody will read its result."""


class Vocab:
    """The model's tokenizer, behind its own lock.

    Tokenizing reads only the vocabulary, which llama.cpp never changes after loading
    (llama-server tokenizes in its HTTP threads while its main loop decodes), so it needs no
    wait for a running generation: `count_tokens` is called on the trio thread and must not
    block it for seconds. The lock keeps tokenizer calls apart and away from `close`.
    """

    def __init__(self, llama: Llama) -> None:
        self._llama = llama
        self.lock = threading.Lock()
        self.closed = False  # set under `lock` by whoever frees the model
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        assert vocab is not None, "a loaded model has a vocabulary"
        self._vocab = vocab

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        with self.lock:
            self._check_open()
            return self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def piece(self, token: int, *, special: bool = False) -> bytes:
        with self.lock:
            self._check_open()
            return self._llama.detokenize([token], special=special)

    def _check_open(self) -> None:
        if self.closed:
            raise BackendError("the llama-cpp backend is closed")

    def is_end_of_generation(self, token: int) -> bool:
        # EOS, EOT, <|im_end|>...: llama.cpp knows every token that ends a turn
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


@attrs.frozen
class TokenJob:
    prompt: Sequence[int]
    max_tokens: int
    temperature: float
    seed: int
    stop_strings: tuple[str, ...] = ()


def _first_stop(text: bytes, stops: Sequence[bytes], new: int) -> int | None:
    """Where the earliest stop string in `text` starts, looking only where `new` bytes reach."""
    hits = []
    for stop in stops:
        start = max(0, len(text) - new - len(stop) + 1)
        at = text.find(stop, start)
        if at >= 0:
            hits.append(at)
    return min(hits) if hits else None


def _stop_prefix_length(text: bytes, stops: Sequence[bytes]) -> int:
    """The longest tail of `text` that a stop string could still grow out of."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextStream:
    """Turns the growing answer into text pieces that add up to the final, stripped answer.

    It holds back whatever may still change: an incomplete UTF-8 character, a tail that may
    turn out to start a stop string (cut from the answer), and whitespace at either end
    (stripped from the answer).
    """

    def __init__(self, stops: Sequence[bytes], sink: TextSink) -> None:
        self._stops = stops
        self._sink = sink
        self.sent = ""

    def update(self, text: bytes) -> None:
        settled = text[: len(text) - _stop_prefix_length(text, self._stops)]
        self._send(settled.decode("utf-8", errors="ignore").strip())

    def finish(self, answer: str) -> None:
        self._send(answer)

    def _send(self, visible: str) -> None:
        if len(visible) > len(self.sent) and visible.startswith(self.sent):
            piece, self.sent = visible[len(self.sent) :], visible
            self._sink(piece)


def _result(job: TokenJob, text: bytes, completion: int, finish_reason: str) -> Generation:
    answer = text.decode("utf-8", errors="ignore").strip()  # a cut may split a character
    return Generation(answer, len(job.prompt), completion, finish_reason)


def _sample(
    tokens: Generator[int, Sequence[int] | None, None],
    vocab: Vocab,
    job: TokenJob,
    should_stop: Callable[[], bool],
    stream: TextStream | None,
) -> Generation:
    stops = [s.encode("utf-8") for s in job.stop_strings if s]
    text = b""
    completion = 0
    for token in tokens:
        if should_stop():
            raise Stopped
        if vocab.is_end_of_generation(token):
            return _result(job, text, completion, "stop")
        completion += 1
        piece = vocab.piece(token)
        text += piece
        cut = _first_stop(text, stops, len(piece))
        if cut is not None:
            return _result(job, text[:cut], completion, "stop")
        if stream is not None:
            stream.update(text)
        if completion >= job.max_tokens:
            break
    return _result(job, text, completion, "length")


def run_tokens(
    llama: Llama,
    vocab: Vocab,
    job: TokenJob,
    should_stop: Callable[[], bool],
    sink: TextSink | None = None,
) -> Generation:
    """Generate for `job`; raise Stopped soon after `should_stop()` turns true.

    With `sink`, the answer also goes to it in pieces as the tokens come (see TextStream).

    The caller holds the model's lock. The KV cache is cleared first: llama-cpp-python
    otherwise reuses the longest matching prefix of the previous call, and a prompt decoded
    in different pieces gives slightly different logits, so temperature 0 would not be
    repeatable.
    """
    llama.reset()  # type: ignore[no-untyped-call]  # llama_cpp leaves reset() unannotated
    for start in range(0, len(job.prompt), PROMPT_CHUNK):
        if should_stop():
            raise Stopped
        llama.eval(job.prompt[start : start + PROMPT_CHUNK])
    llama.set_seed(job.seed)
    # the prompt is decoded already: generate() sees it cached and starts sampling
    tokens = llama.generate(
        job.prompt, top_k=TOP_K, top_p=TOP_P, min_p=MIN_P, temp=job.temperature,
        repeat_penalty=REPEAT_PENALTY, reset=True,
    )
    stream = None if sink is None else TextStream([s.encode() for s in job.stop_strings if s], sink)
    try:
        generation = _sample(tokens, vocab, job, should_stop, stream)
    finally:
        tokens.close()
    if stream is not None:
        stream.finish(generation.text)
    return generation
