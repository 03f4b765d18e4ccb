"""Running one benchmark from the command line: progress bars, user errors, JSON or a table."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

import click
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dmoa_p2p.bench import BenchError, ProgressCallback
from dmoa_p2p.cli._common import print_json, run_until_signalled, user_errors


class _Reportable(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Reportable)


def run_bench(main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    """`run_until_signalled`, with a BenchError too as one line, wrapped in a group or not."""
    with user_errors(also=(BenchError,)):
        run_until_signalled(main)


def measure_and_report(
    measure: Callable[[], Awaitable[R]], as_json: bool, show: Callable[[R], None]
) -> None:
    """Run one benchmark under `run_bench`; print its JSON or `show` it."""
    results: list[R] = []

    async def main(_nursery: trio.Nursery) -> None:
        results.append(await measure())

    run_bench(main)
    if not results:
        raise click.ClickException("interrupted")
    if as_json:
        print_json(results[0].to_json())
    else:
        show(results[0])


@contextlib.contextmanager
def count_bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, fed with how many of `total` are done."""
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


@contextlib.contextmanager
def stage_bar(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr, fed with (stage label, done, total)."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        refresh_per_second=4,  # its thread's CPU time counts in the measurement
    )
    task = bar.add_task("starting the swarm", total=None)

    def update(label: str, done: int, total: int) -> None:
        bar.update(task, description=label, completed=done, total=total)

    with bar:
        yield update
