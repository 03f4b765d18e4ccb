"""The node's HTTP API: OpenAI-compatible chat completions, models, Prometheus metrics, status."""

from dmoa_p2p.http._app import build_app, model_entries
from dmoa_p2p.http._errors import ApiError
from dmoa_p2p.http._metrics import NodeMetrics
from dmoa_p2p.http._request import (
    DEFAULT_MODEL,
    ChatRequest,
    MoaSettings,
    flatten_messages,
    parse_chat_request,
    parse_model,
)
from dmoa_p2p.http._server import bind_http_socket, hypercorn_config, serve_http
from dmoa_p2p.http._status import status_html

__all__ = [
    "DEFAULT_MODEL",
    "ApiError",
    "ChatRequest",
    "MoaSettings",
    "NodeMetrics",
    "bind_http_socket",
    "build_app",
    "flatten_messages",
    "hypercorn_config",
    "model_entries",
    "parse_chat_request",
    "parse_model",
    "serve_http",
    "status_html",
]
