"""A multi-turn conversation as the one prompt a MoA query answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dmoa_p2p.backends import ChatMessage

ROLES = ("system", "user", "assistant")


def conversation_prompt(messages: Sequence[ChatMessage]) -> str:
    """The conversation as one prompt, as the HTTP API's `flatten_messages` builds it.

    A lone user message is the prompt itself. Otherwise system messages come first, then
    the earlier turns as `User:` and `Assistant:` paragraphs, then the last user message.
    ValueError when the last message is not a non-empty user message.
    """
    if not messages or messages[-1].role != "user":
        raise ValueError("a conversation must end with a user message")
    last = messages[-1].content
    if not last.strip():
        raise ValueError("the last user message is empty")
    if len(messages) == 1:
        return last
    system = [m.content for m in messages[:-1] if m.role == "system"]
    earlier = [f"{m.role.capitalize()}: {m.content}" for m in messages[:-1] if m.role != "system"]
    parts = [*system]
    if earlier:
        parts.append("Conversation so far:\n\n" + "\n\n".join(earlier))
    parts.append(f"User: {last}" if earlier else last)
    return "\n\n".join(parts)


def messages_from_json(data: Any) -> list[ChatMessage]:
    """`[{"role": ..., "content": ...}, ...]` as chat messages; ValueError says what is wrong."""
    if not isinstance(data, list) or not data:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    messages = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise ValueError(f"messages[{i}] must be an object with a string content")
        role = item.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        messages.append(ChatMessage(role, item["content"]))
    return messages
