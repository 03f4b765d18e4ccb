"""The composition root: a node, its control socket and its HTTP API as sibling services."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import trio

from dmoa_p2p.backends import Backend
from dmoa_p2p.config import NodeConfig
from dmoa_p2p.control import serve_control
from dmoa_p2p.http import bind_http_socket, serve_http
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import Node, OverlayOpener, open_node


@attrs.define
class App:
    """A running node and the front ends that serve its user."""

    node: Node
    http_urls: tuple[str, ...] = ()  # the OpenAI-compatible API, when it is on

    def status(self) -> dict[str, Any]:
        """The node's snapshot as JSON, and where its HTTP API listens."""
        return {**self.node.snapshot().to_json(), "http": list(self.http_urls)}


@contextlib.asynccontextmanager
async def open_app(
    config: NodeConfig,
    *,
    http_socket: socket.socket | None = None,
    control: bool = True,
    identity: NodeIdentity | None = None,
    overlay_opener: OverlayOpener | None = None,
    backend: Backend | None = None,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> AsyncIterator[App]:
    """Start a node with its control socket (unless `control` is False) and, with
    `config.http`, its HTTP API (on `http_socket` if the caller bound it already); yield
    once all of them are up, stop them on exit. The other arguments go to `open_node`."""
    if config.http is not None and http_socket is None:
        http_socket = bind_http_socket(config.http)  # fail fast on a taken port
    # hypercorn takes the socket over once serving; closed here if it never got that far
    with contextlib.closing(http_socket) if http_socket else contextlib.nullcontext():
        async with open_node(
            config,
            identity=identity,
            overlay_opener=overlay_opener,
            backend=backend,
            wall_clock=wall_clock,
            rng=rng,
        ) as node:
            app = App(node)
            async with trio.open_nursery() as nursery:
                if http_socket is not None:
                    app.http_urls = await nursery.start(
                        serve_http, node, http_socket, config.http_api_key, app.status
                    )
                # last: whoever sees the control socket answer sees every front end up
                if control:
                    await nursery.start(serve_control, node, config.control_path, app.status)
                try:
                    yield app
                finally:
                    nursery.cancel_scope.cancel()


async def serve_app(
    config: NodeConfig,
    http_socket: socket.socket | None = None,
    *,
    task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node and its front ends until cancelled (trio service style)."""
    async with open_app(config, http_socket=http_socket) as app:
        task_status.started(app)
        await trio.sleep_forever()
