"""LLM backends: the plugin interface, optional streaming, and the built-in `fake` test backend."""

from dmoa_p2p.backends._loading import load_backend
from dmoa_p2p.backends._protocol import (
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    Backend,
    BackendBusy,
    BackendError,
    BackendPlugin,
    ChatMessage,
    Generation,
    GenerationParams,
    Role,
    StreamingBackend,
    TextCallback,
    cut_at_stop,
)

__all__ = [
    "MAX_STOP_CHARS",
    "MAX_STOP_STRINGS",
    "Backend",
    "BackendBusy",
    "BackendError",
    "BackendPlugin",
    "ChatMessage",
    "Generation",
    "GenerationParams",
    "Role",
    "StreamingBackend",
    "TextCallback",
    "cut_at_stop",
    "load_backend",
]
