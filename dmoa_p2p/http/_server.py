"""The HTTP server in the node's nursery: hypercorn's trio worker serving the node's app."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from dmoa_p2p.config import ConfigError, parse_http_bind
from dmoa_p2p.http._app import build_app
from dmoa_p2p.http._metrics import NodeMetrics
from dmoa_p2p.node import Node

log = logging.getLogger(__name__)


def bind_http_socket(bind: str) -> socket.socket:
    """A TCP socket bound to `bind` (HOST:PORT), not yet listening; ConfigError if it cannot be.

    Binding before anything else starts turns a taken port into one clear error.
    """
    host, port = parse_http_bind(bind)
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"http: cannot listen on {bind}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"http: cannot listen on {bind}: {exc.strerror or exc}") from exc
    return sock


def hypercorn_config(sock: socket.socket) -> Config:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here on
    config.accesslog = None
    # hypercorn's own messages go through our logging setup (-v shows them), not stderr
    config.errorlog = logging.getLogger("dmoa_p2p.http.hypercorn")
    config.include_server_header = False
    config.graceful_timeout = 1.0
    return config


async def serve_http(
    node: Node,
    sock: socket.socket,
    api_key: str | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
    *,
    task_status: trio.TaskStatus[tuple[str, ...]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the node's HTTP API on `sock` (see `bind_http_socket`) until cancelled.

    Reports the URLs it listens on when it starts; `status` as in `build_app`.
    """
    metrics = NodeMetrics(node)
    app = build_app(node, metrics, api_key, status)
    node.prompts.answer_listeners.append(metrics.observe)
    try:
        # Starlette is an ASGI app; its signature is typed more loosely than hypercorn's
        framework = cast(ASGIFramework, app)
        await serve(framework, hypercorn_config(sock), task_status=_Relay(task_status))
    finally:
        node.prompts.answer_listeners.remove(metrics.observe)


class _Relay:
    """Passes hypercorn's list of bound URLs on as a tuple."""

    def __init__(self, outer: trio.TaskStatus[tuple[str, ...]]) -> None:
        self._outer = outer

    def started(self, binds: list[str] | None = None) -> None:
        urls = tuple(binds or ())
        log.info("HTTP API on %s", ", ".join(urls))
        self._outer.started(urls)
