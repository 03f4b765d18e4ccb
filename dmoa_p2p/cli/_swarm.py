"""`dmoa-p2p swarm`: a localhost swarm for demos and tests, optionally answering one question."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import click
import trio
from rich.console import Console

from dmoa_p2p.cli._ask import query_options, query_request, show_answer
from dmoa_p2p.cli._common import (
    backend_options,
    check_plugin_name,
    freeze_startup_heap,
    json_option,
    parse_backend_options,
    print_json,
    run_until_signalled,
    user_errors,
)
from dmoa_p2p.moa import Answer, QueryRequest
from dmoa_p2p.swarm import (
    SwarmError,
    SwarmMember,
    backend_args,
    open_inprocess_swarm,
    open_process_swarm,
)

# progress and tables go to stderr so that --json output stays clean
progress = Console(stderr=True)
MAX_PROCESSES = 64  # a node process takes about 100 MB
MAX_IN_PROCESS = 256


@click.command()
@click.option(
    "--nodes",
    "n",
    type=click.IntRange(1, MAX_IN_PROCESS),
    default=3,
    show_default=True,
    help=f"How many nodes to start on 127.0.0.1 (over {MAX_PROCESSES}: with --in-process).",
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
    help="Give up if peer views have not converged this many seconds after every node is up.",
)
@click.option(
    "--base-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes' data directories go. [default: a temporary directory]",
)
@backend_options
@click.option(
    "--http-base-port",
    type=click.IntRange(1, 65535),
    help="Serve each node's HTTP API: node i on 127.0.0.1:PORT+i.",
)
@click.option(
    "--ask",
    "prompt",
    metavar="PROMPT",
    help="Ask the first node this once the swarm has converged, print the answer, stop.",
)
@query_options
@json_option
@click.pass_context
def swarm(
    ctx: click.Context,
    /,
    n: int,
    in_process: bool,
    duration: float | None,
    timeout: float,
    base_dir: Path | None,
    backend: str | None,
    backend_option: tuple[str, ...],
    http_base_port: int | None,
    prompt: str | None,
    show_trace: bool,
    as_json: bool,
    **query: Any,
) -> None:
    """Start N nodes on 127.0.0.1, all bootstrapping from the first; wait until they joined
    (each holds every other, or a sample of 8 in a larger swarm, and is held by another)."""
    if n > MAX_PROCESSES and not in_process:
        raise click.BadParameter(
            f"{n} node processes would need about {n // 10} GB; use --in-process "
            f"(up to {MAX_IN_PROCESS}) or at most {MAX_PROCESSES} nodes",
            param_hint="--nodes",
        )
    if http_base_port is not None and http_base_port + n > 65536:
        raise click.BadParameter(f"{n} ports from {http_base_port} go past 65535")
    verbosity = ctx.find_root().params.get("verbose", 0)
    options = parse_backend_options(backend_option)
    if backend:
        with user_errors():
            check_plugin_name("backend", backend)
    request = QueryRequest.from_json(query_request(query, prompt)) if prompt else None
    node_args = backend_args(backend, options)
    config: dict[str, Any] = {"backend_options": options, "http_base_port": http_base_port}
    if backend:
        config["backend"] = backend

    async def main(nursery: trio.Nursery) -> None:
        with progress.status(f"starting {n} nodes…") as status:
            start = trio.current_time()  # convergence is timed from here, start-up included
            if in_process:
                cm: Any = open_inprocess_swarm(n, base_dir, **config)
            else:
                cm = open_process_swarm(n, base_dir, verbosity, node_args, http_base_port)
            async with cm as local:
                up_s = trio.current_time() - start
                freeze_startup_heap()
                status.update("waiting until every node has joined…")
                await local.wait_converged(timeout)
                timing = SwarmTiming(up_s, trio.current_time() - start)
                status.stop()
                report(local.members, timing, as_json and request is None)
                if request is None:
                    await trio.sleep(math.inf if duration is None else duration)
                    return
                status.update(f"asking node 0 (M={request.layers}, k={request.proposers})…")
                status.start()
                answer: Answer = await (
                    local.nodes[0].ask(request) if in_process else local.ask(request)
                )
                status.stop()
                show_answer(answer.to_json(), show_trace, as_json)

    run_until_signalled(main, also=(SwarmError,))
    if not as_json:
        progress.print("swarm stopped", style="dim")


@attrs.frozen
class SwarmTiming:
    """Seconds from the swarm's start until every node was up, and until every node's peer
    view held every other node (as first seen by polling the nodes' status)."""

    up_s: float
    converged_s: float


def report(members: list[SwarmMember], timing: SwarmTiming, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "up_s": round(timing.up_s, 3),
                "converged_s": round(timing.converged_s, 3),
                "nodes": [
                    {
                        "index": m.index,
                        "peer_id": m.peer_id,
                        "multiaddr": m.dial_addr,
                        "data_dir": str(m.data_dir),
                        "http": list(m.http_urls),
                    }
                    for m in members
                ],
            }
        )
        return
    progress.print(
        f"[bold]{len(members)}-node swarm on 127.0.0.1[/] (data in {members[0].data_dir.parent})"
    )
    for m in members:
        progress.print(f"  node {m.index}  {m.dial_addr}", soft_wrap=True)
        for url in m.http_urls:
            progress.print(f"          API {url}/v1  status {url}/status", soft_wrap=True)
    progress.print(
        f"every node joined {timing.converged_s:.1f} s after the start "
        f"(all {len(members)} up after {timing.up_s:.1f} s)"
    )
