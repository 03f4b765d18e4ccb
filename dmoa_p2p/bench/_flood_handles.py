"""The flooder of `bench flood`, in this process or in a Python process of its own."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any, Protocol

import attrs
import trio

from dmoa_p2p.bench._flood_peer import LOCAL, FloodCounts, Flooder, FloodLimits
from dmoa_p2p.bench._overlay import BenchError
from dmoa_p2p.control import LineReader
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import open_libp2p_overlay

JOIN_TIMEOUT_S = 30.0
_CHILD_EXIT_S = 10.0


class FlooderHandle(Protocol):
    @property
    def peer_id(self) -> str: ...

    async def flood(self) -> None: ...

    async def mark(self) -> FloodCounts: ...

    async def stop(self) -> FloodCounts: ...


@attrs.define
class _InProcess:
    flooder: Flooder

    @property
    def peer_id(self) -> str:
        return self.flooder.peer_id

    async def flood(self) -> None:
        self.flooder.start_flood()

    async def mark(self) -> FloodCounts:
        return self.flooder.counts()

    async def stop(self) -> FloodCounts:
        return await self.flooder.stop_flood()


@contextlib.asynccontextmanager
async def in_process_flooder(
    victim_addr: str, victim: str, limits: FloodLimits
) -> AsyncIterator[FlooderHandle]:
    """The flooder in this trio run: its CPU is the swarm's (all nodes run here too)."""
    identity = NodeIdentity.generate()
    async with open_libp2p_overlay(identity, LOCAL) as overlay, trio.open_nursery() as nursery:
        flooder = Flooder(overlay, identity, victim, limits)
        await nursery.start(flooder.run, victim_addr)
        yield _InProcess(flooder)
        nursery.cancel_scope.cancel()


class ProcessFlooder:
    """The flooder in a Python process of its own, driven over its stdin and stdout."""

    def __init__(self, process: trio.Process, errors: IO[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._lines = LineReader(process.stdout, 1 << 20)  # a line of counts
        self._errors = errors
        self.peer_id = ""

    async def ready(self) -> None:
        self.peer_id = str((await self._answer())["ready"])

    async def flood(self) -> None:
        await self._stdin.send_all(b"flood\n")

    async def mark(self) -> FloodCounts:
        await self._stdin.send_all(b"mark\n")
        return FloodCounts.from_json((await self._answer())["counts"])

    async def stop(self) -> FloodCounts:
        await self._stdin.send_all(b"stop\n")
        return FloodCounts.from_json((await self._answer())["counts"])

    async def _answer(self) -> dict[str, Any]:
        line = await self._lines.line()
        if line is None:
            await self._process.wait()
            self._errors.seek(0)
            tail = self._errors.read().decode(errors="replace").strip().splitlines()[-5:]
            raise BenchError(
                f"the flooder process ended (exit code {self._process.returncode}): "
                + (" | ".join(tail) or "no error output")
            )
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextlib.asynccontextmanager
async def process_flooder(
    victim_addr: str, victim: str, limits: FloodLimits
) -> AsyncIterator[FlooderHandle]:
    """`python -m dmoa_p2p.bench._flood_peer`, on another core: its CPU is not the victim's."""
    module = "dmoa_p2p.bench._flood_peer"
    command = [sys.executable, "-m", module, victim_addr, victim, json.dumps(limits.to_json())]
    with tempfile.TemporaryFile() as errors:
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
        )
        assert process.stdin is not None
        try:
            flooder = ProcessFlooder(process, errors)
            with trio.fail_after(JOIN_TIMEOUT_S):
                await flooder.ready()
            yield flooder
        finally:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await process.stdin.aclose()  # its end of input: it stops and exits
                with trio.move_on_after(limits.drain_s + _CHILD_EXIT_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
