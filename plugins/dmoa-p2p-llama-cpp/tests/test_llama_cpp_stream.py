"""Streaming: pieces from the worker thread reach trio in order and add up to the answer."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from dmoa_p2p_llama_cpp import LlamaCppBackend
from dmoa_p2p_llama_cpp._chat import ChatFormat
from dmoa_p2p_llama_cpp._generation import TextStream
from llama_cpp import llama_chat_format as lcf

from dmoa_p2p.backends import ChatMessage, GenerationParams, StreamingBackend

QUESTION = [ChatMessage("user", "Why is the sky blue?")]
GREEDY = GenerationParams(max_tokens=24, temperature=0.0)


def streamed(stops: list[bytes], growth: list[bytes], answer: str) -> list[str]:
    pieces: list[str] = []
    stream = TextStream(stops, pieces.append)
    text = b""
    for piece in growth:
        text += piece
        stream.update(text)
    stream.finish(answer)
    return pieces


def test_pieces_hold_back_what_may_still_change() -> None:
    # leading and trailing spaces are stripped from answers; so they wait
    assert streamed([], [b" Hi", b" there", b" "], "Hi there") == ["Hi", " there"]
    # "é" is two bytes: its first byte alone is no text yet
    assert streamed([], [b"caf", b"\xc3", b"\xa9!"], "café!") == ["caf", "é!"]
    # "<|" might start the stop string "<|im_end|>", and here it does
    assert streamed([b"<|im_end|>"], [b"Yes", b"<|", b"im_"], "Yes") == ["Yes"]
    # ... and here it did not
    assert streamed([b"<|im_end|>"], [b"a", b"<|", b"b"], "a<|b") == ["a", "<|b"]


async def test_a_streamed_answer_is_the_generated_answer(tiny: LlamaCppBackend) -> None:
    assert isinstance(tiny, StreamingBackend)
    whole = await tiny.generate(QUESTION, GREEDY)
    pieces: list[str] = []
    generation = await tiny.generate_stream(QUESTION, GREEDY, pieces.append)
    assert generation == whole
    assert "".join(pieces) == whole.text
    assert len(pieces) > 3


async def test_stop_strings_never_leak_into_the_stream(tiny: LlamaCppBackend) -> None:
    plain = (await tiny.generate(QUESTION, GREEDY)).text
    word = plain.split()[2]

    def with_stop(messages: list[Any], **kwargs: Any) -> lcf.ChatFormatterResponse:
        return lcf.ChatFormatterResponse(prompt=lcf.format_chatml(messages).prompt, stop=word)

    tiny.chat_format = ChatFormat("stops", with_stop)
    pieces: list[str] = []
    generation = await tiny.generate_stream(QUESTION, GREEDY, pieces.append)
    assert "".join(pieces) == generation.text
    assert word not in generation.text


async def test_nothing_arrives_after_the_caller_gave_up(tiny: LlamaCppBackend) -> None:
    pieces: list[str] = []
    many = GenerationParams(max_tokens=200, temperature=0.0)
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tiny.generate_stream, QUESTION, many, pieces.append)
            while not pieces:  # noqa: ASYNC110 - waiting for the worker thread's first piece
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    count = len(pieces)
    await tiny.generate(QUESTION, GREEDY)  # waits for the lock: the old thread has stopped
    assert len(pieces) == count


@pytest.mark.integration  # the real default model
async def test_smollm2_streams_its_answer_token_by_token(smollm2: LlamaCppBackend) -> None:
    pieces: list[tuple[float, str]] = []
    question = [ChatMessage("user", "Name three colours of the rainbow.")]
    generation = await smollm2.generate_stream(
        question,
        GenerationParams(max_tokens=32, temperature=0.0),
        lambda piece: pieces.append((trio.current_time(), piece)),
    )
    assert "".join(piece for _, piece in pieces) == generation.text.strip() != ""
    assert "<|im_end|>" not in generation.text
    assert len(pieces) >= generation.completion_tokens // 2  # about one piece a token
    assert pieces[-1][0] > pieces[0][0]  # spread over the generation, not at its end
