"""Chat formats: the GGUF file's own template, or one of llama-cpp-python's named formats."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import attrs
import jinja2
from llama_cpp import llama_chat_format as lcf
from llama_cpp.llama_types import ChatCompletionRequestMessage

from dmoa_p2p.backends import BackendError, ChatMessage

log = logging.getLogger(__name__)

TEMPLATE_KEY = "tokenizer.chat_template"
TEMPLATE_NAME = "gguf-template"
# ChatML (<|im_start|>role ... <|im_end|>) is what most current instruct models use (Qwen,
# SmolLM, Hermes, many fine-tunes), and its <|im_end|> stop string ends a turn even when the
# model does not know it as a special token; llama-cpp-python's own fallback, llama-2, has
# no stop string, so a model that does not know its [INST] tags rambles to max_tokens
FALLBACK_FORMAT = "chatml"
NAMED_FORMATS: Mapping[str, lcf.ChatFormatter] = {
    "chatml": lcf.format_chatml,
    "llama-2": lcf.format_llama2,
    "llama-3": lcf.format_llama3,
    "mistral-instruct": lcf.format_mistral_instruct,
    "gemma": lcf.format_gemma,
    "zephyr": lcf.format_zephyr,
    "qwen": lcf.format_qwen,
    "openchat": lcf.format_openchat,
    "phind": lcf.format_phind,
    "alpaca": lcf.format_alpaca,
}


@attrs.frozen
class RenderedPrompt:
    text: str
    stop_strings: tuple[str, ...]
    add_bos: bool  # False when the template writes the BOS token itself


def _as_llama(message: ChatMessage) -> ChatCompletionRequestMessage:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    return {"role": "assistant", "content": message.content}


def fold_system_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """System messages moved into the first user message, for templates that refuse them."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    for i, message in enumerate(rest):
        if message.role == "user":
            rest[i] = ChatMessage("user", f"{system}\n\n{message.content}")
            return rest
    return [ChatMessage("user", system), *rest]


@attrs.frozen
class ChatFormat:
    """How a model wants a conversation written out: `gguf-template` or a named format."""

    name: str
    formatter: lcf.ChatFormatter

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        try:
            response = self._format(messages)
        except Exception as exc:  # templates are code from the model file: any error
            folded = fold_system_messages(messages)
            if folded == list(messages):
                raise BackendError(f"chat format {self.name} rejected the messages: {exc}") from exc
            # Mistral's and Gemma's templates raise on a system message
            log.debug("chat format %s rejected a system message (%s); folding it", self.name, exc)
            try:
                response = self._format(folded)
            except Exception as exc2:
                raise BackendError(
                    f"chat format {self.name} rejected the messages: {exc2}"
                ) from exc2
        stop = response.stop
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return RenderedPrompt(response.prompt, stops, add_bos=not response.added_special)

    def _format(self, messages: Sequence[ChatMessage]) -> lcf.ChatFormatterResponse:
        return self.formatter(messages=[_as_llama(m) for m in messages])


def choose_chat_format(
    metadata: Mapping[str, str],
    override: str | None,
    *,
    bos_token: str,
    eos_token: str,
    eos_id: int,
    model_label: str,
) -> ChatFormat:
    """The named `override`, else the GGUF's template, else ChatML with a warning."""
    if override is not None:
        if override not in NAMED_FORMATS:
            raise BackendError(
                f"unknown chat_format {override!r}; known: {', '.join(NAMED_FORMATS)} "
                f"(leave it out to use the model's own template)"
            )
        return ChatFormat(override, NAMED_FORMATS[override])
    template = metadata.get(TEMPLATE_KEY)
    if template:
        try:
            formatter = lcf.Jinja2ChatFormatter(
                template=template, eos_token=eos_token, bos_token=bos_token,
                stop_token_ids=[eos_id],
            )
        except jinja2.TemplateError as exc:
            log.warning(
                "%s: the chat template in the GGUF file does not compile (%s); writing prompts "
                "in the %s format instead; pass -o chat_format=NAME to choose another",
                model_label, exc, FALLBACK_FORMAT,
            )
        else:
            return ChatFormat(TEMPLATE_NAME, formatter)
    else:
        log.warning(
            "%s has no chat template (GGUF key %s); writing prompts in the %s format; "
            "pass -o chat_format=NAME if the model expects another (known: %s)",
            model_label, TEMPLATE_KEY, FALLBACK_FORMAT, ", ".join(NAMED_FORMATS),
        )
    return ChatFormat(FALLBACK_FORMAT, NAMED_FORMATS[FALLBACK_FORMAT])
