"""The backend on a tiny random GGUF: token counts, limits, repeatability, chat formats."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from dmoa_p2p_llama_cpp import LlamaCppBackend, LlamaOptions
from dmoa_p2p_llama_cpp._chat import ChatFormat, fold_system_messages
from dmoa_p2p_llama_cpp._generation import _first_stop
from llama_cpp import Llama
from llama_cpp import llama_chat_format as lcf

from dmoa_p2p.backends import BackendError, ChatMessage, GenerationParams

QUESTION = [ChatMessage("user", "Why is the sky blue?")]
GREEDY = GenerationParams(max_tokens=12, temperature=0.0)


async def test_answers_run_to_max_tokens_with_exact_counts(tiny: LlamaCppBackend) -> None:
    assert tiny.model_name == "tiny-chatml"
    assert tiny.chat_format.name == "gguf-template"
    generation = await tiny.generate(QUESTION, GenerationParams(max_tokens=7))
    assert generation.text
    assert generation.completion_tokens == 7
    assert generation.finish_reason == "length"
    assert generation.prompt_tokens > tiny.count_tokens(QUESTION[0].content)


async def test_greedy_answers_match_llama_cpp_python_chat_completion(
    tiny: LlamaCppBackend, tiny_model: Path
) -> None:
    mine = await tiny.generate(QUESTION, GREEDY)
    reference = Llama(str(tiny_model), n_ctx=256, n_threads=1, verbose=False)
    try:
        theirs = reference.create_chat_completion(
            [{"role": "user", "content": QUESTION[0].content}], max_tokens=12, temperature=0
        )
    finally:
        reference.close()
    assert not isinstance(theirs, Iterator)
    assert mine.text == (theirs["choices"][0]["message"]["content"] or "").strip()
    assert mine.prompt_tokens == theirs["usage"]["prompt_tokens"]
    assert mine.completion_tokens == theirs["usage"]["completion_tokens"]


async def test_count_tokens_uses_the_model_vocabulary(tiny: LlamaCppBackend) -> None:
    assert tiny.count_tokens("the capital of France") == 4
    assert tiny.count_tokens("") == 0


async def test_temperature_zero_repeats_even_after_other_prompts(tiny: LlamaCppBackend) -> None:
    first = await tiny.generate(QUESTION, GREEDY)
    await tiny.generate([ChatMessage("user", "the capital of France is")], GREEDY)
    assert await tiny.generate(QUESTION, GREEDY) == first


async def test_the_seed_decides_a_sampled_answer(tiny: LlamaCppBackend) -> None:
    async def sample(seed: int | None) -> str:
        params = GenerationParams(max_tokens=16, temperature=1.0, seed=seed)
        return (await tiny.generate(QUESTION, params)).text

    assert await sample(1) == await sample(1)
    assert await sample(1) != await sample(2)
    assert await sample(2**32 + 1) == await sample(2)  # seeds wrap to llama.cpp's uint32
    assert await sample(None) == await sample(0)  # the backend's own seed, option `seed`


async def test_a_prompt_longer_than_the_context_is_refused_with_the_numbers(
    tiny: LlamaCppBackend,
) -> None:
    assert tiny.context_length == 256
    long = [ChatMessage("user", "the sky is blue " * 100)]
    with pytest.raises(BackendError, match=r"the prompt is \d+ tokens but the model's context "
                                           r"holds 256 .*12 were asked"):
        await tiny.generate(long, GREEDY)


async def test_an_answer_ends_where_the_context_ends(tiny: LlamaCppBackend) -> None:
    prompt = [ChatMessage("user", "the sky " * 115)]
    generation = await tiny.generate(prompt, GenerationParams(max_tokens=200, temperature=0))
    assert generation.finish_reason == "length"
    assert generation.prompt_tokens + generation.completion_tokens == tiny.context_length


async def test_stop_strings_cut_the_answer(tiny: LlamaCppBackend) -> None:
    plain = (await tiny.generate(QUESTION, GREEDY)).text
    word = plain.split()[1]

    def with_stop(messages: list[Any], **kwargs: Any) -> lcf.ChatFormatterResponse:
        return lcf.ChatFormatterResponse(prompt=lcf.format_chatml(messages).prompt, stop=word)

    tiny.chat_format = ChatFormat("stops", with_stop)
    generation = await tiny.generate(QUESTION, GREEDY)
    assert generation.finish_reason == "stop"
    assert word not in generation.text
    assert plain.startswith(generation.text)


def test_first_stop_looks_only_where_new_text_reaches() -> None:
    assert _first_stop(b"abc<|end|>", [b"<|end|>"], 4) == 3
    assert _first_stop(b"abc<|en", [b"<|end|>"], 2) is None
    assert _first_stop(b"xSTOPy", [b"STOP", b"Py"], 1) == 4  # STOP was whole before
    assert _first_stop(b"xSTOPy", [b"STOP", b"Py"], 2) == 1


async def test_a_model_without_template_falls_back_to_chatml_with_a_warning(
    tiny_model_without_template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dmoa_p2p_llama_cpp"):
        backend = LlamaOptions(model=tiny_model_without_template, n_ctx=256).load()
    try:
        assert backend.chat_format.name == "chatml"
        assert "tiny-bare.gguf has no chat template" in caplog.text
        assert "in the chatml format" in caplog.text
        assert (await backend.generate(QUESTION, GREEDY)).completion_tokens == 12
    finally:
        await backend.aclose()


async def test_a_named_chat_format_overrides_the_template(tiny_model: Path) -> None:
    backend = LlamaOptions(model=tiny_model, n_ctx=256, chat_format="llama-2").load()
    try:
        assert backend.chat_format.name == "llama-2"
        assert "[INST]" in backend.chat_format.render(QUESTION).text
    finally:
        await backend.aclose()


def test_system_messages_are_folded_for_templates_that_refuse_them() -> None:
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system role') }}{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n"
        "{% endfor %}"
    )
    strict = ChatFormat("strict", lcf.Jinja2ChatFormatter(template, "</s>", "<s>"))
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    assert strict.render(messages).text == "[user] Be brief.\n\nHi\n"
    assert fold_system_messages([ChatMessage("system", "S")]) == [ChatMessage("user", "S")]
    refuses_all = lcf.Jinja2ChatFormatter("{{ raise_exception('never') }}", "</s>", "<s>")
    with pytest.raises(BackendError, match="chat format picky rejected the messages: never"):
        ChatFormat("picky", refuses_all).render(messages)
    with pytest.raises(jinja2.TemplateError):
        lcf.Jinja2ChatFormatter("{% if %}", "</s>", "<s>")


async def test_a_closed_backend_refuses_work(tiny_model: Path) -> None:
    backend = LlamaOptions(model=tiny_model).load()
    await backend.aclose()
    await backend.aclose()  # twice is fine
    with pytest.raises(BackendError, match="closed"):
        await backend.generate(QUESTION, GREEDY)
    with pytest.raises(BackendError, match="closed"):
        backend.count_tokens("hi")
