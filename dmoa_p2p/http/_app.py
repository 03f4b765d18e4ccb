"""The node's ASGI app: chat completions, models, metrics and status, behind an optional key."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dmoa_p2p.http._chat import StreamedAnswer, admit, answer_whole
from dmoa_p2p.http._errors import ApiError, bad_request
from dmoa_p2p.http._metrics import CONTENT_TYPE, NodeMetrics
from dmoa_p2p.http._request import (
    DEFAULT_MODEL,
    LOCAL,
    MoaSettings,
    parse_chat_request,
    parse_model,
)
from dmoa_p2p.http._status import status_html
from dmoa_p2p.node import Node
from dmoa_p2p.registry import plugin_names

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 4 << 20
ROUTES = ("/v1/chat/completions", "/v1/models", "/metrics", "/status", "/health", "/")
OPEN_ROUTES = ("/health",)  # load balancers and container checks hold no key


BROWSER_ROUTES = frozenset({"/status", "/metrics"})  # the status page and what it links to


class BearerAuth:
    """Every request needs the key (compared in constant time), but `GET /health`.

    The key comes as `Authorization: Bearer <key>`, or, for a browser opening the status page
    and the pages it links to (`BROWSER_ROUTES`), as the query parameter `key` of a GET
    request. Nowhere else: a key in an address ends up in histories and proxy logs.
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    def _given(self, scope: Scope) -> bytes:
        header: bytes = dict(scope["headers"]).get(b"authorization", b"")
        if header.startswith(b"Bearer "):
            return header.removeprefix(b"Bearer ")
        if scope["method"] in ("GET", "HEAD") and scope["path"] in BROWSER_ROUTES:
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            return (query.get("key") or [""])[-1].encode()
        return b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = scope["type"] == "http" and scope["path"] not in OPEN_ROUTES
        if checked and not hmac.compare_digest(self._given(scope), self.key):
            error = ApiError(
                401,
                "missing or wrong API key: send Authorization: Bearer <key> "
                "(or, from a browser, add ?key=<key> to the address)",
                kind="invalid_request_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class CountRequests:
    """Counts requests by route and status in the node's metrics."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        # one label for every model id: a client cannot grow the metric without bound
        route = "/v1/models/{id}" if path.startswith("/v1/models/") else path
        route = route if route in (*ROUTES, "/v1/models/{id}") else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.http_requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def _json_body(request: Request) -> Any:
    too_large = ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    data = bytearray()
    async with contextlib.aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise too_large
    try:
        return json.loads(data)
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


async def chat_completions(request: Request) -> Response:
    node = _node(request)
    chat = parse_chat_request(await _json_body(request), node.backend.model_name)
    admitted = admit(node, chat.query)  # before any response: a refusal is its own status
    if chat.stream:
        return StreamedAnswer(node, admitted, chat)
    try:
        return await answer_whole(node, admitted, chat, request.receive)
    except ApiError:
        raise
    except Exception as exc:  # a bug or a broken plugin: the client gets the OpenAI shape
        log.exception("a query failed")
        raise ApiError(500, f"the query failed: {exc}", kind="server_error") from exc


def model_entries(node: Node, created: int) -> list[dict[str, Any]]:
    """`dmoa`, a deeper one, one per installed strategy and aggregator, and the local model."""
    configurations = {
        DEFAULT_MODEL: MoaSettings(),
        f"{DEFAULT_MODEL}:layers=2,proposers=2": MoaSettings(2, 2),
    }
    for name in plugin_names("strategy"):
        if name not in (MoaSettings().strategy, LOCAL.strategy):
            configurations[f"{DEFAULT_MODEL}:strategy={name}"] = MoaSettings(strategy=name)
    for name in plugin_names("aggregator"):
        if name != MoaSettings().aggregator:
            configurations[f"{DEFAULT_MODEL}:aggregator={name}"] = MoaSettings(aggregator=name)
    configurations[node.backend.model_name] = LOCAL
    return [
        _model_entry(name, settings, node, created) for name, settings in configurations.items()
    ]


def _model_entry(name: str, settings: MoaSettings, node: Node, created: int) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": node.peer_id if settings == LOCAL else "dmoa-p2p",
        "dmoa": settings.to_json(),
    }


async def list_models(request: Request) -> Response:
    entries = model_entries(_node(request), request.app.state.started)
    return JSONResponse({"object": "list", "data": entries})


async def retrieve_model(request: Request) -> Response:
    """One model: any name a completion accepts, listed or not (`dmoa:layers=3` too)."""
    node, name = _node(request), request.path_params["model"]
    entries = {e["id"]: e for e in model_entries(node, request.app.state.started)}
    if name in entries:
        return JSONResponse(entries[name])
    try:
        settings = parse_model(name, node.backend.model_name)
    except ApiError as exc:  # a name no completion would take is no model
        raise ApiError(404, exc.message, param="model", code="model_not_found") from exc
    entry = _model_entry(name, settings, node, request.app.state.started)
    return JSONResponse(entry)


async def health(request: Request) -> Response:
    """200 while the node serves (its model was loaded before the server started), 503 while
    the server shuts down; no key needed."""
    node = _node(request)
    body = {
        "status": "stopping" if request.app.state.stopping else "ok",
        "peer_id": node.peer_id,
        "model": node.backend.model_name,
        "peers": len(node.live_peer_ids()),
        "queue": {"length": node.queue.length, "capacity": node.queue.capacity},
    }
    return JSONResponse(body, 503 if request.app.state.stopping else 200)


async def metrics_page(request: Request) -> Response:
    registry: NodeMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)


async def status_page(request: Request) -> Response:
    data = request.app.state.status()
    wanted = request.query_params.get("format")
    if wanted is None:  # browsers ask for HTML, scripts and curl for anything
        wanted = "html" if "text/html" in request.headers.get("accept", "") else "json"
    if wanted == "html":  # its links carry the key it was opened with, if any
        page = HTMLResponse(status_html(data, request.query_params.get("key")))
        page.headers["Referrer-Policy"] = "no-referrer"  # its address may hold the key
        return page
    if wanted == "json":
        return JSONResponse(data)
    raise bad_request(f"format must be html or json, got {wanted!r}", "format")


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return ApiError(exc.status_code, str(exc.detail), kind=kind).response()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    app.state.stopping = True  # the server drains: /health tells load balancers to go


def build_app(
    node: Node,
    metrics: NodeMetrics,
    api_key: str | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """The API of `node`; `status` is what `GET /status` shows (the node's snapshot if not
    given)."""
    middleware = [Middleware(CountRequests, metrics=metrics)]
    if api_key:
        middleware.append(Middleware(BearerAuth, key=api_key))
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/status", status_page, methods=["GET"]),
            Route("/", status_page, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=_lifespan,
    )
    app.state.stopping = False
    app.state.node = node
    app.state.metrics = metrics
    app.state.status = status or (lambda: node.snapshot().to_json())
    app.state.started = int(time.time())
    return app
