"""The backend on the real SmolLM2-135M-Instruct: answers, repeatability, cancellation, threads."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import trio
import trio.lowlevel
from dmoa_p2p_llama_cpp import LlamaCppBackend, LlamaOptions, default_model_path
from llama_cpp import Llama

from dmoa_p2p.backends import BackendError, ChatMessage, GenerationParams

CAPITAL = [ChatMessage("user", "What is the capital of France?")]
STORY = [ChatMessage("user", "Write a very long story about a dragon who learns to bake.")]
GREEDY = GenerationParams(max_tokens=16, temperature=0.0)


# the real default model: loading and running it is an integration test
pytestmark = pytest.mark.integration


async def test_a_short_answer_with_token_counts(smollm2: LlamaCppBackend) -> None:
    assert smollm2.model_name == "SmolLM2-135M-Instruct.Q4_1"
    assert smollm2.context_length == 2048
    assert smollm2.chat_format.name == "gguf-template"
    generation = await smollm2.generate(CAPITAL, GREEDY)
    assert generation.text.strip()
    assert generation.prompt_tokens > smollm2.count_tokens(CAPITAL[0].content)
    assert 1 <= generation.completion_tokens <= 16
    assert smollm2.count_tokens("hello world") == 2


async def test_a_turn_ends_on_the_end_of_turn_token(smollm2: LlamaCppBackend) -> None:
    generation = await smollm2.generate(
        [ChatMessage("user", "Reply with the single word: yes")],
        GenerationParams(max_tokens=64, temperature=0.0),
    )
    assert generation.finish_reason == "stop"
    assert "<|im_end|>" not in generation.text


async def test_greedy_answers_match_llama_cpp_python_chat_completion(
    smollm2: LlamaCppBackend,
) -> None:
    mine = await smollm2.generate(CAPITAL, GREEDY)
    reference = Llama(str(default_model_path()), n_ctx=2048, n_threads=1, verbose=False)
    try:
        theirs = reference.create_chat_completion(
            [{"role": "user", "content": CAPITAL[0].content}], max_tokens=16, temperature=0
        )
    finally:
        reference.close()
    assert not isinstance(theirs, Iterator)
    assert mine.text == (theirs["choices"][0]["message"]["content"] or "").strip()
    assert (mine.prompt_tokens, mine.completion_tokens) == (
        theirs["usage"]["prompt_tokens"], theirs["usage"]["completion_tokens"]
    )


async def test_temperature_zero_is_repeatable_across_calls(smollm2: LlamaCppBackend) -> None:
    first = await smollm2.generate(CAPITAL, GREEDY)
    # a prompt sharing the template's prefix: without a reset the next call would reuse
    # its KV cache and decode the question in different pieces
    await smollm2.generate([ChatMessage("user", "What is 2 + 2?")], GREEDY)
    assert await smollm2.generate(CAPITAL, GREEDY) == first


async def test_cancelling_mid_answer_returns_at_once_and_frees_the_model(
    smollm2: LlamaCppBackend,
) -> None:
    with trio.move_on_after(1.0) as scope:  # the prompt takes about 0.4 s: now it samples
        await smollm2.generate(STORY, GenerationParams(max_tokens=1500))
    assert scope.cancelled_caught
    # generate returned within a token or two of the deadline, not after the whole answer
    assert trio.current_time() - scope.deadline < 0.5
    # the worker stops at its next token: a tiny call gets the lock well before 1500 tokens
    with trio.fail_after(5):
        generation = await smollm2.generate(CAPITAL, GenerationParams(max_tokens=2))
    assert generation.completion_tokens == 2


async def test_cancelling_while_reading_a_long_prompt(smollm2: LlamaCppBackend) -> None:
    long_prompt = [ChatMessage("user", "Summarise: " + "the cat sat on the mat. " * 250)]
    assert smollm2.count_tokens(long_prompt[0].content) > 1500  # many seconds on one core
    with trio.move_on_after(0.3):
        await smollm2.generate(long_prompt, GenerationParams(max_tokens=8))
    with trio.fail_after(5):
        assert (await smollm2.generate(CAPITAL, GenerationParams(max_tokens=2))).text


async def test_concurrent_calls_are_served_one_at_a_time(smollm2: LlamaCppBackend) -> None:
    questions = [CAPITAL, [ChatMessage("user", "Name a colour.")]]
    alone = [await smollm2.generate(q, GREEDY) for q in questions]
    together: list[object] = [None, None]

    async def ask(i: int) -> None:
        together[i] = await smollm2.generate(questions[i], GREEDY)

    async with trio.open_nursery() as nursery:
        for i in range(2):
            nursery.start_soon(ask, i)
    assert together == alone


async def test_the_event_loop_keeps_running_while_the_model_works(
    smollm2: LlamaCppBackend,
) -> None:
    ticks: list[float] = []
    async with trio.open_nursery() as nursery:

        async def tick() -> None:
            while True:
                ticks.append(trio.current_time())
                smollm2.count_tokens("tokenizing while the model decodes")
                await trio.sleep(0.01)

        nursery.start_soon(tick)
        await smollm2.generate(STORY, GenerationParams(max_tokens=24))
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 10
    assert max(gaps) < 0.25


async def test_closing_stops_a_running_generation_first() -> None:
    backend = LlamaOptions().load()

    async def generate() -> None:
        with pytest.raises(BackendError, match="the llama-cpp backend was closed"):
            await backend.generate(STORY, GenerationParams(max_tokens=1500))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(generate)
        await trio.sleep(0.8)
        with trio.fail_after(5):
            await backend.aclose()
