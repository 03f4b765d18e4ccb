"""A node's local control endpoint: JSON lines over a unix socket only its owner can open."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from dmoa_p2p.admission import PromptRefused
from dmoa_p2p.backends import TextCallback
from dmoa_p2p.moa import (
    ProgressCallback,
    QueryRequest,
    conversation_prompt,
    messages_from_json,
    progress_to_json,
)
from dmoa_p2p.node import Node
from dmoa_p2p.overlay import MAX_PROVIDERS
from dmoa_p2p.registry import PluginError

Status = Callable[[], dict[str, Any]]

log = logging.getLogger(__name__)
_MAX_REQUEST_BYTES = 1 << 20
_MAX_ANSWER_BYTES = 16 << 20  # an answer line carries the whole trace
TEXT_EVENT = "text"  # a piece of the answer's text, in a streamed `ask`
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
DEFAULT_PROVIDERS = 20


class ControlError(Exception):
    """The node's control endpoint could not be reached or answered with an error."""


def _check_path(path: Path) -> None:
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ControlError(
            f"control socket path {path} is longer than {_MAX_UNIX_PATH} bytes; "
            "use a shorter --data-dir"
        )


async def serve_control(
    node: Node,
    path: Path,
    status: Status,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests for `node` on a unix socket at `path` until cancelled;
    `status` gives what the `status` request returns.

    One JSON line per request: `{"op": "status"}`, or `{"op": "ask", "request": {...}}`
    with a query (`QueryRequest.to_json`, or `messages` for `prompt`; see
    `query_from_json`). With `"stream": true` the node first sends `{"event": ...}` lines
    (progress, see `dmoa_p2p.moa.progress`, and `"text"` pieces of the answer); the last
    line is the answer (`Answer.to_json`) or `{"error": ...}`. Closing the connection or
    sending `{"op": "cancel"}` cancels the query.
    """
    _prepare_socket_path(path)
    sock = trio.socket.from_stdlib_socket(_bound_owner_only(path))
    try:
        sock.listen()
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(functools.partial(_handle, node, status), [listener])
    finally:
        sock.close()
        _remove_socket(path)


def _prepare_socket_path(path: Path) -> None:
    _check_path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new data dir: owner only
    _remove_socket(path)  # a socket left by a node that was killed


def _bound_owner_only(path: Path) -> socket.socket:
    """A unix socket bound at `path` that only its owner can open from the first moment.

    The umask is the process's: bound synchronously, no other task runs while it is set.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


def _remove_socket(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _handle(node: Node, status: Status, stream: trio.abc.Stream) -> None:
    async with stream:
        reader = LineReader(stream, _MAX_REQUEST_BYTES)
        try:
            request = json.loads(await reader.line() or b"")
            if request["op"] == "ask":
                await _serve_ask(node, request, stream, reader)
                return
            if request["op"] == "providers":
                response = await _providers(node, request)
            else:
                response = _dispatch(status, request)
        except (ValueError, KeyError, TypeError) as exc:
            response = {"error": f"bad control request: {exc}"}
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception as exc:  # one client's request must never stop the node
            log.exception("control request failed")
            response = {"error": f"the node could not answer: {exc}"}
        await _send_line(stream, response)


def _dispatch(status: Status, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "status":
        return status()
    return {"error": f"unknown control operation {op!r}; try one of: status, ask, providers"}


async def _providers(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    """`{"op": "providers", "model": NAME, "limit": N}`: peers serving NAME (the node's own
    model when null), found in the DHT or in presence; `limit` from 1 to MAX_PROVIDERS."""
    model = request.get("model") or node.backend.model_name
    limit = request.get("limit", DEFAULT_PROVIDERS)
    if not isinstance(model, str) or not isinstance(limit, int) or isinstance(limit, bool):
        raise ValueError("providers takes a model name and an integer limit")
    if not 1 <= limit <= MAX_PROVIDERS:
        raise ValueError(f"limit must be from 1 to {MAX_PROVIDERS}")
    return {"model": model, "providers": await node.providers(model, limit)}


def query_from_json(data: Any) -> QueryRequest:
    """A query from its JSON form, whose `messages` (a conversation) may stand in for `prompt`
    (folded into one prompt as the HTTP API does); ValueError says what is wrong."""
    if isinstance(data, dict) and "messages" in data:
        if "prompt" in data:
            raise ValueError("give a query's prompt or its messages, not both")
        prompt = conversation_prompt(messages_from_json(data["messages"]))
        data = {**{k: v for k, v in data.items() if k != "messages"}, "prompt": prompt}
    return QueryRequest.from_json(data)


async def _serve_ask(
    node: Node, request: dict[str, Any], stream: trio.abc.Stream, reader: LineReader
) -> None:
    """Answer one query; with `stream`, its progress and text go first, a JSON line each.

    The client leaving (or sending `{"op": "cancel"}`) cancels the query on the node.
    """
    query = query_from_json(request["request"])
    lines_in, lines_out = trio.open_memory_channel[dict[str, Any]](math.inf)

    def push(line: dict[str, Any]) -> None:
        # the queue may go on calling after the query was cancelled
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            lines_in.send_nowait(line)

    streaming = bool(request.get("stream"))
    on_text = (lambda piece: push({"event": TEXT_EVENT, "text": piece})) if streaming else None
    on_progress = (lambda event: push(progress_to_json(event))) if streaming else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_client, reader, nursery.cancel_scope)
        async with trio.open_nursery() as writer:
            writer.start_soon(_write_lines, stream, lines_out, nursery.cancel_scope)
            async with lines_in:
                push(await _answer(node, query, on_text, on_progress))
        nursery.cancel_scope.cancel()
    if nursery.cancel_scope.cancelled_caught:
        log.debug("control client left; its query was cancelled")


async def _answer(
    node: Node,
    query: QueryRequest,
    on_text: TextCallback | None,
    on_progress: ProgressCallback | None,
) -> dict[str, Any]:
    try:
        answer = await node.ask(query, on_text, on_progress)
    except (PluginError, ValueError) as exc:
        return {"error": str(exc)}
    except PromptRefused as exc:
        return {"error": f"refused: {exc}", "cause": exc.cause, "retry_after_s": exc.retry_after_s}
    return answer.to_json()


async def _watch_client(reader: LineReader, scope: trio.CancelScope) -> None:
    """Cancel `scope` when the client closes the connection or asks to cancel."""
    with contextlib.suppress(trio.BrokenResourceError, ValueError):
        while (line := await reader.line()) is not None:
            if _is_cancel(line):
                break
    scope.cancel()


def _is_cancel(line: bytes) -> bool:
    try:
        request = json.loads(line)
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("op") == "cancel"


async def _write_lines(
    stream: trio.abc.Stream,
    lines: trio.MemoryReceiveChannel[dict[str, Any]],
    scope: trio.CancelScope,
) -> None:
    async with lines:
        async for line in lines:
            if not await _send_line(stream, line):
                scope.cancel()  # nobody reads the answer any more
                return


async def _send_line(stream: trio.abc.Stream, line: dict[str, Any]) -> bool:
    """Send one JSON line; False when the client has gone."""
    try:
        await stream.send_all(json.dumps(line).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("control client left before the answer")
        return False
    return True


class LineReader:
    """Reads newline-terminated lines from a stream, each at most `limit` bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self._buffer = bytearray()

    async def line(self) -> bytes | None:
        """The next line without its newline; the rest at the end of the stream; None after."""
        while b"\n" not in self._buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                rest, self._buffer = bytes(self._buffer), bytearray()
                return rest or None
            self._buffer += chunk
            if len(self._buffer) > self.limit:
                raise ValueError(f"a control line is over {self.limit} bytes")
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line


EventCallback = Callable[[dict[str, Any]], None]


async def call_control(
    path: Path, op: str, on_event: EventCallback | None = None, **args: Any
) -> dict[str, Any]:
    """Send one request to the node whose control socket is `path`; return its answer.

    With `on_event`, an `ask` streams: each progress event and piece of text (`{"event": ...}`
    lines) goes to `on_event` before the answer comes. Leaving early (cancelled) closes the
    connection, which cancels the query on the node.
    """
    _check_path(path)
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise ControlError(
            f"no node is answering at {path} ({exc.strerror}); start one with `dmoa-p2p node`"
        ) from exc
    request = {"op": op, **args, **({"stream": True} if on_event else {})}
    async with stream:
        await stream.send_all(json.dumps(request).encode() + b"\n")
        reader = LineReader(stream, _MAX_ANSWER_BYTES)
        while True:
            try:
                line = await reader.line()
            except (ValueError, trio.BrokenResourceError) as exc:
                raise ControlError(f"the node's answer could not be read: {exc}") from exc
            if line is None:
                raise ControlError("the node closed the connection without answering; see its log")
            answer: dict[str, Any] = json.loads(line)
            if "event" not in answer:
                break
            if on_event is not None:
                on_event(answer)
    if "error" in answer:
        raise ControlError(answer["error"])
    return answer
