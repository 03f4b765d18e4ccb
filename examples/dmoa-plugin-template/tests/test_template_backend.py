"""`echo`: built from its options, loaded, answering with the last user message."""

import pytest
from dmoa_plugin_template import EchoBackend

from dmoa_p2p.backends import ChatMessage, GenerationParams, StreamingBackend, load_backend
from dmoa_p2p.registry import PluginOptionsError, create_plugin

MESSAGES = [
    ChatMessage("system", "be brief"),
    ChatMessage("user", "first question"),
    ChatMessage("assistant", "an answer"),
    ChatMessage("user", "what is a mixture of agents?"),
]


async def test_echoes_the_last_user_message_under_its_model_name() -> None:
    backend = create_plugin("backend", "echo", {"model": "parrot"}).load()
    assert isinstance(backend, EchoBackend)
    assert backend.model_name == "parrot"
    generation = await backend.generate(MESSAGES, GenerationParams())
    assert generation.text == "[parrot] what is a mixture of agents?"
    assert (generation.prompt_tokens, generation.completion_tokens) == (12, 7)
    await backend.aclose()


async def test_max_tokens_cuts_the_answer() -> None:
    backend = load_backend("echo")  # what a node does with --backend echo
    generation = await backend.generate(MESSAGES, GenerationParams(max_tokens=3))
    assert generation.text == "[echo] what is"
    assert not isinstance(backend, StreamingBackend)  # the queue sends it as one piece


def test_bad_options_are_refused() -> None:
    with pytest.raises(PluginOptionsError, match="did you mean 'model'"):
        create_plugin("backend", "echo", {"modle": "parrot"})
    with pytest.raises(PluginOptionsError, match="model"):
        create_plugin("backend", "echo", {"model": ""})
