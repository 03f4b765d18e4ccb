"""`dmoa-p2p ask` and `dmoa-p2p plugins`, plus the query options and answer rendering they share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from rich.table import Table
from rich.tree import Tree

from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.cli._common import console, data_dir_option, json_option, print_json, user_errors
from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import call_control
from dmoa_p2p.moa import (
    DEFAULT_AGGREGATOR,
    DEFAULT_LAYER_TIMEOUT_S,
    DEFAULT_LAYERS,
    DEFAULT_PROPOSERS,
    DEFAULT_STRATEGY,
    MAX_LAYERS,
    MAX_PROPOSERS,
)
from dmoa_p2p.registry import PLUGIN_GROUPS, list_plugins
from dmoa_p2p.wire import limits

F = TypeVar("F", bound=Callable[..., Any])


def query_options(func: F) -> F:
    """--layers, --proposers, --strategy, --aggregator, --max-tokens, ... for a MoA query."""
    options = [
        click.option(
            "--layers",
            "-M",
            type=click.IntRange(0, MAX_LAYERS),
            default=DEFAULT_LAYERS,
            show_default=True,
            help="Proposer layers M (0: the local model answers alone).",
        ),
        click.option(
            "--proposers",
            "-k",
            type=click.IntRange(0, MAX_PROPOSERS),
            default=DEFAULT_PROPOSERS,
            show_default=True,
            help="Peers asked per layer, besides this node.",
        ),
        click.option(
            "--strategy",
            default=DEFAULT_STRATEGY,
            show_default=True,
            help="Strategy plugin (see `dmoa-p2p plugins`).",
        ),
        click.option(
            "--aggregator",
            default=DEFAULT_AGGREGATOR,
            show_default=True,
            help="Aggregator plugin (see `dmoa-p2p plugins`).",
        ),
        click.option(
            "--max-tokens",
            type=click.IntRange(1, limits.MAX_TASK_TOKENS),
            default=GenerationParams().max_tokens,
            show_default=True,
            help="Answer length cap for every call.",
        ),
        click.option(
            "--temperature",
            type=click.FloatRange(0, limits.MAX_TEMPERATURE),
            default=GenerationParams().temperature,
            show_default=True,
        ),
        click.option(
            "--layer-timeout",
            type=click.FloatRange(0.1, limits.MAX_DEADLINE_S),
            default=DEFAULT_LAYER_TIMEOUT_S,
            show_default=True,
            help="Seconds a layer waits for slow proposers.",
        ),
        click.option(
            "--trace",
            "show_trace",
            is_flag=True,
            help="Show who proposed what and what each call cost.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def query_request(params: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The control-socket form of a query from `query_options` values."""
    return {
        "prompt": prompt,
        "layers": params["layers"],
        "proposers": params["proposers"],
        "strategy": params["strategy"],
        "aggregator": params["aggregator"],
        "params": {"max_tokens": params["max_tokens"], "temperature": params["temperature"]},
        "layer_timeout_s": params["layer_timeout"],
    }


def show_answer(answer: dict[str, Any], show_trace: bool, as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    console.print(answer["answer"], markup=False, highlight=False)
    if show_trace:
        console.print(trace_tree(answer["trace"]))


def _short(peer_id: str) -> str:
    return peer_id[-8:]


def trace_tree(trace: dict[str, Any]) -> Tree:
    """A rich tree: plan, then per layer who was asked, who answered, who was missing, costs."""
    tree = Tree(
        f"query {trace['query_id'][:8]} from …{_short(trace['origin'])}: "
        f"M={trace['layers_requested']} k={trace['proposers_requested']} "
        f"strategy={trace['strategy']} aggregator={trace['aggregator']} "
        f"[bold]{trace['total_s']:.2f} s[/]"
    )
    for note in trace["notes"]:
        tree.add(f"[yellow]note:[/] {note}")
    calls = trace["calls"]
    for layer in trace["layers"]:
        branch = tree.add(
            f"layer {layer['layer']} ({layer['mode']}, {layer['prompt_bytes']} B prompt"
            + (f", trimmed {layer['truncated']}" if layer["truncated"] else "")
            + f"): {layer['elapsed_s']:.2f} s"
        )
        for call in (c for c in calls if c["layer"] == layer["layer"]):
            branch.add(_call_line(call))
        for missing in layer["missing"]:
            branch.add(f"[red]…{_short(missing['node'])} missing:[/] {missing['reason']}")
        if layer["replacements"]:
            others = ", ".join(f"…{_short(p)}" for p in layer["replacements"])
            branch.add(f"[yellow]asked instead:[/] {others}")
    for call in (c for c in calls if c["role"] == "aggregator"):
        trimmed = f", trimmed {trace['final_truncated']}" if trace["final_truncated"] else ""
        tree.add("aggregation" + trimmed).add(_call_line(call))
    return tree


def _call_line(call: dict[str, Any]) -> str:
    return (
        f"…{_short(call['node'])} {call['role']}: waited {call['queue_wait_s']:.2f} s, "
        f"served {call['service_s']:.2f} s, {call['prompt_tokens']}→{call['completion_tokens']} tok"
    )


@click.command()
@click.argument("prompt")
@query_options
@data_dir_option
@json_option
def ask(prompt: str, data_dir: Path, as_json: bool, show_trace: bool, **params: Any) -> None:
    """Ask the running local node; it answers with a Mixture-of-Agents of its peers."""
    request = query_request(params, prompt)
    with user_errors():
        answer = trio.run(
            functools.partial(call_control, control_socket_path(data_dir), "ask", request=request)
        )
    show_answer(answer, show_trace, as_json)


@click.command()
@click.option("--kind", type=click.Choice(list(PLUGIN_GROUPS)), help="Only this kind.")
@json_option
def plugins(kind: str | None, as_json: bool) -> None:
    """List installed plugins (strategies, aggregators, backends, gossip, admission)."""
    found = list_plugins(kind)
    if as_json:
        print_json(
            [
                {"kind": p.kind, "name": p.name, "target": p.target, "distribution": p.distribution}
                for p in found
            ]
        )
        return
    table = Table(title="installed plugins")
    for column in ("kind", "name", "from", "distribution"):
        table.add_column(column)
    for p in found:
        table.add_row(p.kind, p.name, p.target, p.distribution)
    console.print(table)
