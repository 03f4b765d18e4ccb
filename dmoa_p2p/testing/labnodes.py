"""Real `dmoa-p2p node` processes in the NAT lab's hosts, and waiting for what they report."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import ControlError, call_control
from dmoa_p2p.identity import KEY_FILE_NAME, NodeIdentity, save_identity
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.testing.netlab import LabError, NatLab

PORT = 4001


@attrs.frozen
class LabNode:
    """A `dmoa-p2p node` process on one lab host."""

    host: str
    ip: str
    data_dir: Path
    peer_id: str
    process: subprocess.Popen[bytes]
    log: Path

    def address(self, ip: str | None = None) -> str:
        """Its dial address, at its own IP or at `ip` (its router's, as the internet sees it)."""
        return f"/ip4/{ip or self.ip}/tcp/{PORT}/p2p/{self.peer_id}"

    def said(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_node(
    lab: NatLab,
    host: str,
    base: Path,
    bootstrap: Sequence[str] = (),
    listen_ip: str | None = None,
    options: Sequence[str] = (),
) -> LabNode:
    """Start a node with the fake backend inside `host`, listening on its lab address (or on
    `listen_ip`, e.g. 0.0.0.0), with `options` added to `dmoa-p2p node`'s."""
    data_dir = base / host
    identity = NodeIdentity.generate()  # made here, so its peer id is known before it starts
    save_identity(identity, data_dir / KEY_FILE_NAME)
    listen = f"/ip4/{listen_ip or lab.ip(host)}/tcp/{PORT}"
    node = ["node", "--backend", "fake", "--listen", listen, "--data-dir", str(data_dir)]
    argv = [sys.executable, "-m", "dmoa_p2p", "-q", *node, *options]
    for addr in bootstrap:
        argv += ["--bootstrap", addr]
    # only these settings: none from the environment of whoever runs the lab
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMOA_P2P_")}
    log = base / f"{host}.log"
    process = lab.run(host, argv, log=log, env=env)
    return LabNode(host, lab.ip(host), data_dir, identity.peer_id, process, log)


async def wait_status(
    node: LabNode, condition: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    """The node's status once `condition` holds; LabError, with the node's log, if it exits or
    `timeout_s` passes first."""
    path = control_socket_path(node.data_dir)
    with trio.move_on_after(timeout_s):
        while node.process.poll() is None:
            with contextlib.suppress(ControlError):  # not answering yet: starting
                status = await call_control(path, "status")
                if condition(status):
                    return status
            await trio.sleep(0.1)
        exited = f"node exited with {node.process.returncode}"
        raise LabError(f"{node.host}: {exited}; log:\n{node.said()}")
    raise LabError(f"{node.host}: condition not met within {timeout_s:g} s; log:\n{node.said()}")


async def ask(node: LabNode, request: QueryRequest, timeout_s: float) -> dict[str, Any]:
    """The node's answer to `request`, with its trace; TooSlowError after `timeout_s`."""
    with trio.fail_after(timeout_s):
        answer: dict[str, Any] = await call_control(
            control_socket_path(node.data_dir), "ask", request=request.to_json()
        )
    return answer


def answering(status: dict[str, Any]) -> bool:
    """Any status will do: the node is up."""
    return True


def peers_of(status: dict[str, Any]) -> set[str]:
    return {peer["peer_id"] for peer in status["peers"]}


def link_to(status: dict[str, Any], peer_id: str) -> str | None:
    """How the node reporting `status` is connected to `peer_id` (see `Overlay.link`)."""
    return next((p["link"] for p in status["peers"] if p["peer_id"] == peer_id), None)
