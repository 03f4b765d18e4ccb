"""Localhost swarms: N nodes on 127.0.0.1, in one process or one process each."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from dmoa_p2p.app import App, open_app
from dmoa_p2p.config import LOCALHOST_LISTEN, NodeConfig, control_socket_path
from dmoa_p2p.control import ControlError, call_control
from dmoa_p2p.moa import Answer, QueryRequest
from dmoa_p2p.node import Node

log = logging.getLogger(__name__)


class SwarmError(Exception):
    """A swarm member failed to start, or the swarm did not converge in time."""


@attrs.frozen
class SwarmMember:
    index: int
    peer_id: str
    listen_addrs: tuple[str, ...]
    data_dir: Path
    http_urls: tuple[str, ...] = ()  # its HTTP API, when on

    @property
    def control_path(self) -> Path:
        return control_socket_path(self.data_dir)

    @property
    def dial_addr(self) -> str:
        return dial_addr(self.listen_addrs)


def dial_addr(listen_addrs: Sequence[str]) -> str:
    """Where to dial a member: its 127.0.0.1 address (an in-memory node has just one)."""
    return next((a for a in listen_addrs if a.startswith("/ip4/127.0.0.1/")), listen_addrs[0])


def member_config(data_dir: Path, bootstrap: tuple[str, ...], **overrides: Any) -> NodeConfig:
    """A swarm member: on 127.0.0.1, mDNS off (unless `overrides` say otherwise), so that
    swarms on one machine (tests running at once) never find and join each other."""
    return NodeConfig(
        data_dir=data_dir,
        listen_addrs=(LOCALHOST_LISTEN,),
        bootstrap=bootstrap,
        **{"mdns": False, **overrides},
    )


def backend_args(backend: str | None, options: Mapping[str, str]) -> list[str]:
    """The `dmoa-p2p node` options that choose `backend` (None: the default) with `options`."""
    args = ["--backend", backend] if backend else []
    for key, value in options.items():
        args += ["-o", f"{key}={value}"]
    return args


def member_http(index: int, http_base_port: int | None) -> str | None:
    """Member `index`'s HTTP API address: 127.0.0.1, port `http_base_port + index`."""
    return None if http_base_port is None else f"127.0.0.1:{http_base_port + index}"


# peers each member must hold before a swarm counts as joined: all the others in a swarm
# this small, a sample of this many in a larger one (views are partial: see `view_size`)
JOINED_PEERS = 8


def views_converged(views: Mapping[str, Collection[str]], *, short_allowed: int = 0) -> bool:
    """True when each member's view (member -> the peers it holds) holds members only, and
    at least `JOINED_PEERS` of them (all the others in a smaller swarm), and every member
    is held by another: everyone can draw proposers and be drawn.

    `short_allowed` members may hold fewer (one at least): in a swarm of a thousand, some
    member is always between a shuffle and the next with a few of its entries expired.
    """
    everyone = set(views)
    needed = min(len(everyone) - 1, JOINED_PEERS)
    held: set[str] = set()
    short = 0
    for member, view in views.items():
        peers = set(view)
        if not peers <= everyone - {member} or (needed and not peers):
            return False
        short += len(peers) < needed
        held |= peers
    return short <= short_allowed and (len(everyone) < 2 or held == everyone)


def converged(statuses: list[dict[str, Any]]) -> bool:
    """`views_converged` for the members' /status JSON."""
    return views_converged({s["peer_id"]: [p["peer_id"] for p in s["peers"]] for s in statuses})


async def wait_until_converged(
    statuses: Callable[[], Any], timeout_s: float, poll_s: float = 0.1
) -> float:
    """Poll `statuses()` until `converged`; return the seconds it took or raise SwarmError."""
    start = trio.current_time()
    with trio.move_on_after(timeout_s):
        while True:
            if converged(await statuses()):
                return trio.current_time() - start
            await trio.sleep(poll_s)
    raise SwarmError(f"peer views did not converge within {timeout_s:.0f} s")


class InProcessSwarm:
    """N real libp2p nodes, each with its control socket, in this trio run; each can be stopped."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.apps: list[App] = []
        self._scopes: list[trio.CancelScope] = []
        self._done: list[trio.Event] = []

    @property
    def nodes(self) -> list[Node]:
        return [app.node for app in self.apps]

    @property
    def members(self) -> list[SwarmMember]:
        return [
            SwarmMember(i, a.node.peer_id, a.node.listen_addrs, a.node.config.data_dir, a.http_urls)
            for i, a in enumerate(self.apps)
        ]

    async def add(self, config: NodeConfig) -> App:
        app: App = await self._nursery.start(self._run_member, config)
        return app

    async def _run_member(
        self, config: NodeConfig, *, task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED
    ) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with open_app(config) as app:
                    self.apps.append(app)
                    self._scopes.append(scope)
                    self._done.append(done)
                    task_status.started(app)
                    await trio.sleep_forever()
        finally:
            done.set()

    async def stop(self, index: int) -> None:
        """Stop member `index` (it stays in `nodes`, silent, so indices keep their meaning)."""
        self._scopes[index].cancel()
        await self._done[index].wait()

    def running(self) -> list[Node]:
        return [app.node for app in self._running_apps()]

    async def statuses(self) -> list[dict[str, Any]]:
        return [app.status() for app in self._running_apps()]

    def _running_apps(self) -> list[App]:
        return [a for a, d in zip(self.apps, self._done, strict=True) if not d.is_set()]

    async def wait_converged(self, timeout_s: float = 30.0) -> float:
        return await wait_until_converged(self.statuses, timeout_s)


@contextlib.asynccontextmanager
async def open_inprocess_swarm(
    n: int, base_dir: Path | None = None, **config: Any
) -> AsyncIterator[InProcessSwarm]:
    """Start `n` nodes, the first as everyone's bootstrap; stop them all on exit.

    `config` holds NodeConfig fields for every node, and optionally `http_base_port`: node
    i then serves its HTTP API on 127.0.0.1:`http_base_port + i`.
    """
    http_base_port: int | None = config.pop("http_base_port", None)
    with swarm_dir(base_dir) as base:
        async with trio.open_nursery() as nursery:
            swarm = InProcessSwarm(nursery)

            def settings(i: int, bootstrap: tuple[str, ...]) -> NodeConfig:
                if http_base_port is not None:
                    config["http"] = member_http(i, http_base_port)
                return member_config(base / f"node{i}", bootstrap, **config)

            await swarm.add(settings(0, ()))
            bootstrap = (swarm.members[0].dial_addr,)
            for i in range(1, n):
                await swarm.add(settings(i, bootstrap))
            try:
                yield swarm
            finally:
                nursery.cancel_scope.cancel()


class ProcessSwarm:
    """N `dmoa-p2p node` processes on 127.0.0.1, watched through their control sockets."""

    def __init__(self) -> None:
        self.members: list[SwarmMember] = []
        self.processes: list[trio.Process] = []

    async def statuses(self) -> list[dict[str, Any]]:
        return [await call_control(m.control_path, "status") for m in self.members]

    async def wait_converged(self, timeout_s: float = 60.0) -> float:
        return await wait_until_converged(self.statuses, timeout_s, poll_s=0.25)

    async def ask(self, request: QueryRequest, index: int = 0) -> Answer:
        """Ask member `index` through its control socket."""
        data = await call_control(
            self.members[index].control_path, "ask", request=request.to_json()
        )
        return Answer.from_json(data)

    async def start_member(
        self,
        data_dir: Path,
        bootstrap: tuple[str, ...],
        verbosity: int,
        node_args: Sequence[str] = (),
        stderr: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start one member; `stderr` a file for its log (else this process's stderr),
        `env` variables to set for it."""
        command = [
            sys.executable,
            "-m",
            "dmoa_p2p",
            # the swarm reports for its members; each says only what goes wrong, unless -v
            *(["-v"] * verbosity if verbosity else ["-q"]),
            "node",
            "--data-dir",
            str(data_dir),
            "--listen",
            LOCALHOST_LISTEN,
            "--no-mdns",  # see `member_config`; a later --mdns in node_args wins
            *node_args,
        ]
        for addr in bootstrap:
            command += ["--bootstrap", addr]
        with contextlib.ExitStack() as files:
            log_file = files.enter_context(stderr.open("ab")) if stderr is not None else None
            process = await trio.lowlevel.open_process(
                command,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env={**os.environ, **env} if env else None,
            )
        self.processes.append(process)
        status = await _await_control(control_socket_path(data_dir), process)
        self.members.append(
            SwarmMember(
                len(self.members),
                status["peer_id"],
                tuple(status["listen_addrs"]),
                data_dir,
                tuple(status.get("http", ())),
            )
        )

    async def stop_all(self, grace_s: float = 10.0) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        with trio.move_on_after(grace_s):
            for process in self.processes:
                await process.wait()
        for process in self.processes:
            if process.returncode is None:
                log.warning("node process %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()


async def _await_control(
    path: Path, process: trio.Process, timeout_s: float = 60.0
) -> dict[str, Any]:
    with trio.move_on_after(timeout_s):
        while process.returncode is None:
            with contextlib.suppress(ControlError):
                return await call_control(path, "status")
            await trio.sleep(0.1)
        raise SwarmError(f"node process exited with code {process.returncode} while starting")
    raise SwarmError(f"node did not answer on {path} within {timeout_s:.0f} s")


@contextlib.asynccontextmanager
async def open_process_swarm(
    n: int,
    base_dir: Path | None = None,
    verbosity: int = 0,
    node_args: Sequence[str] = (),
    http_base_port: int | None = None,
    stderr_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    member_args: Mapping[int, Sequence[str]] | None = None,
) -> AsyncIterator[ProcessSwarm]:
    """Start `n` node processes (the first is the bootstrap); interrupt and reap them on exit.

    `node_args` are extra `dmoa-p2p node` options for every member (e.g. the backend), and
    `member_args[i]` more for node i after them (e.g. its own model); with
    `http_base_port`, node i serves its HTTP API on 127.0.0.1:`http_base_port + i`; with
    `stderr_dir`, node i logs to `stderr_dir`/node<i>.log; `env` is set for every member.
    """

    def args(i: int) -> list[str]:
        http = member_http(i, http_base_port)
        own = (member_args or {}).get(i, ())
        return [*node_args, *own, *(["--http", http] if http else [])]

    with swarm_dir(base_dir) as base:
        swarm = ProcessSwarm()
        if stderr_dir is not None:
            await trio.Path(stderr_dir).mkdir(parents=True, exist_ok=True)

        # a process spends its first seconds importing: more at once than the machine has
        # cores only makes each of them late for its start-up timeout
        starting = trio.CapacityLimiter(max(2, os.cpu_count() or 1))

        async def start(i: int, bootstrap: tuple[str, ...]) -> None:
            log = None if stderr_dir is None else stderr_dir / f"node{i}.log"
            async with starting:
                await swarm.start_member(
                    base / f"node{i}", bootstrap, verbosity, args(i), log, env
                )

        try:
            await start(0, ())
            bootstrap = (swarm.members[0].dial_addr,)
            async with trio.open_nursery() as nursery:
                for i in range(1, n):
                    nursery.start_soon(start, i, bootstrap)
            yield swarm
        finally:
            with trio.CancelScope(shield=True):
                await swarm.stop_all()


@contextlib.contextmanager
def swarm_dir(base_dir: Path | None, prefix: str = "dmoa-") -> Iterator[Path]:
    """`base_dir` (created if missing) for the members' data directories, or a temporary one."""
    if base_dir is not None:
        base_dir.mkdir(parents=True, exist_ok=True)
        yield base_dir
        return
    # short path under /tmp: unix socket paths are limited to 107 bytes
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as tmp:
        yield Path(tmp)
