"""`dmoa-p2p swarm`: a localhost swarm for demos and tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import trio

from dmoa_p2p.cli._common import console, json_option, print_json, run_until_signalled
from dmoa_p2p.swarm import SwarmError, SwarmMember, open_inprocess_swarm, open_process_swarm


@click.command()
@click.option(
    "--nodes",
    "n",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="How many nodes to start on 127.0.0.1.",
)
@click.option("--in-process", is_flag=True, help="Run all nodes in this process.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds once converged. [default: until Ctrl-C]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60,
    show_default=True,
    help="Give up if peer views have not converged after this many seconds.",
)
@click.option(
    "--base-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes' data directories go. [default: a temporary directory]",
)
@json_option
@click.pass_context
def swarm(
    ctx: click.Context,
    n: int,
    in_process: bool,
    duration: float | None,
    timeout: float,
    base_dir: Path | None,
    as_json: bool,
) -> None:
    """Start N nodes on 127.0.0.1, all bootstrapping from the first; wait until all see all."""
    verbosity = ctx.find_root().params.get("verbose", 0)

    async def main(nursery: trio.Nursery) -> None:
        if in_process:
            async with open_inprocess_swarm(n, base_dir) as local:
                await _report(local.members, await local.wait_converged(timeout), as_json)
                await _wait(duration)
        else:
            async with open_process_swarm(n, base_dir, verbosity) as procs:
                await _report(procs.members, await procs.wait_converged(timeout), as_json)
                await _wait(duration)

    try:
        run_until_signalled(main)
    except SwarmError as exc:
        raise click.ClickException(str(exc)) from exc
    if not as_json:
        console.print("swarm stopped", style="dim")


async def _report(members: list[SwarmMember], converged_s: float, as_json: bool) -> None:
    if as_json:
        result: dict[str, Any] = {
            "converged_s": round(converged_s, 3),
            "nodes": [
                {
                    "index": m.index,
                    "peer_id": m.peer_id,
                    "multiaddr": m.dial_addr,
                    "data_dir": str(m.data_dir),
                }
                for m in members
            ],
        }
        print_json(result)
        return
    console.print(
        f"[bold]{len(members)}-node swarm on 127.0.0.1[/] (data in {members[0].data_dir.parent})"
    )
    for m in members:
        console.print(f"  node {m.index}  {m.dial_addr}", soft_wrap=True)
    console.print(f"every node sees every other node (converged in {converged_s:.1f} s)")


async def _wait(duration: float | None) -> None:
    await trio.sleep(math.inf if duration is None else duration)
