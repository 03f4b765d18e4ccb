"""A node's local control endpoint: JSON lines over a unix socket only its owner can open."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from dmoa_p2p.admission import PromptRefused
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import Node
from dmoa_p2p.registry import PluginError

Status = Callable[[], dict[str, Any]]

log = logging.getLogger(__name__)
_MAX_REQUEST_BYTES = 1 << 20
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


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
    `status` gives what the `status` request returns."""
    _prepare_socket_path(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen()
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(functools.partial(_handle, node, status), [listener])
    finally:
        sock.close()
        _remove_socket(path)


def _prepare_socket_path(path: Path) -> None:
    _check_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_socket(path)  # a socket left by a node that was killed


def _remove_socket(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _handle(node: Node, status: Status, stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            request = json.loads(await _read_line(stream))
            response = await _dispatch(node, status, request)
        except (ValueError, KeyError, TypeError) as exc:
            response = {"error": f"bad control request: {exc}"}
        except trio.BrokenResourceError:
            return
        try:
            await stream.send_all(json.dumps(response).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("control client left before the answer")


async def _dispatch(node: Node, status: Status, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "status":
        return status()
    if op == "ask":
        try:
            answer = await node.ask(QueryRequest.from_json(request["request"]))
        except (PluginError, ValueError) as exc:
            return {"error": str(exc)}
        except PromptRefused as exc:
            return {
                "error": f"refused: {exc}",
                "cause": exc.cause,
                "retry_after_s": exc.retry_after_s,
            }
        return answer.to_json()
    return {"error": f"unknown control operation {op!r}; try one of: status, ask"}


async def _read_line(stream: trio.abc.Stream) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > _MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    return bytes(buffer.split(b"\n", 1)[0])


async def call_control(path: Path, op: str, **args: Any) -> dict[str, Any]:
    """Send one request to the node whose control socket is `path`; return its answer."""
    _check_path(path)
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise ControlError(
            f"no node is answering at {path} ({exc.strerror}); start one with `dmoa-p2p node`"
        ) from exc
    async with stream:
        await stream.send_all(json.dumps({"op": op, **args}).encode() + b"\n")
        answer: dict[str, Any] = json.loads(await _read_line(stream) or b"{}")
    if "error" in answer:
        raise ControlError(answer["error"])
    return answer
