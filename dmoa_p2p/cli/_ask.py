"""`dmoa-p2p ask` and `dmoa-p2p plugins`, plus the query options and answer rendering they share."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from rich.table import Table
from rich.tree import Tree

from dmoa_p2p.backends import GenerationParams
from dmoa_p2p.cli._common import (
    console,
    data_dir_option,
    json_option,
    print_json,
    until_signalled,
    user_errors,
)
from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import TEXT_EVENT, call_control
from dmoa_p2p.moa import (
    DEFAULT_AGGREGATOR,
    DEFAULT_LAYER_TIMEOUT_S,
    DEFAULT_LAYERS,
    DEFAULT_PROPOSERS,
    DEFAULT_STRATEGY,
    MAX_LAYERS,
    MAX_PROPOSERS,
    FinalStarted,
    LayerDone,
    LayerStarted,
    Progress,
    progress_from_json,
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


def conversation(system: str | None, turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Chat messages: the system message (if any), then the (role, text) turns."""
    head = [("system", system)] if system else []
    return [{"role": role, "content": text} for role, text in [*head, *turns]]


def conversation_request(params: dict[str, Any], messages: list[dict[str, str]]) -> dict[str, Any]:
    """`query_request` for a conversation: the node folds its messages into one prompt."""
    request = query_request(params, "")
    del request["prompt"]
    return {**request, "messages": messages}


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


class AnswerView:
    """Shows a query while it runs, like `ollama run`: progress on a terminal's stderr, then
    the answer's text on stdout as the node streams it; notes always go to stderr."""

    def __init__(self, text: bool, progress: bool, shown_notes: set[str] | None = None) -> None:
        """`shown_notes`: notes not to repeat (a chat shares it between its turns)."""
        self.text = text  # stream the answer's text to stdout
        self.progress = progress  # keep a progress line on stderr
        self.shown_notes = set() if shown_notes is None else shown_notes
        self.streamed = False
        self._status_shown = False

    def on_event(self, event: dict[str, Any]) -> None:
        """One streamed line of the node's (see `call_control`)."""
        if event.get("event") == TEXT_EVENT:
            if self.text:
                self._clear()
                sys.stdout.write(event["text"])
                sys.stdout.flush()
                self.streamed = True
            return
        try:
            progress = progress_from_json(event)
        except ValueError:
            return  # an event of a newer node: not ours to show
        if isinstance(progress, FinalStarted) and progress.note not in ("", *self.shown_notes):
            self._clear()
            click.echo(f"note: {progress.note}", err=True)
            self.shown_notes.add(progress.note)
        if self.progress and not self.streamed:
            self._status(describe_progress(progress))

    def finish(self, answer: dict[str, Any], max_tokens: int) -> None:
        """End the answer's line; say when the answer was cut at max_tokens."""
        self._clear()
        if self.text:
            click.echo("" if self.streamed else answer["answer"])  # ends the streamed line
        if answer.get("truncated"):
            click.echo(
                f"note: the answer was cut at {max_tokens} tokens; raise --max-tokens for more",
                err=True,
            )

    def cancelled(self) -> None:
        self._clear()
        if self.streamed:
            click.echo()
        click.echo("cancelled", err=True)

    def _status(self, line: str) -> None:
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()
        self._status_shown = True

    def _clear(self) -> None:
        if self._status_shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self._status_shown = False


def describe_progress(event: Progress) -> str:
    """One status line: "layer 1: 2/3 proposals", "aggregating 3 proposals", ..."""
    if isinstance(event, FinalStarted):
        return f"aggregating {event.proposals} proposals" if event.proposals else "answering"
    name = f"layer {event.layer}" + (f"/{event.layers}" if event.layers > 1 else "")
    if isinstance(event, LayerStarted):
        return f"{name}: 0/{event.expected} proposals"
    missing = f", {event.missing} missing" if isinstance(event, LayerDone) and event.missing else ""
    return f"{name}: {event.answered}/{event.expected} proposals{missing}"


def run_query(path: Path, request: dict[str, Any], view: AnswerView) -> dict[str, Any] | None:
    """Ask the node at `path`, showing the query in `view`; None when Ctrl-C cancelled it
    (closing the connection, which cancels the query on the node)."""
    answers: list[dict[str, Any]] = []

    async def main(_nursery: trio.Nursery) -> None:
        answers.append(await call_control(path, "ask", view.on_event, request=request))

    with contextlib.suppress(KeyboardInterrupt), user_errors():  # Ctrl-C before trio's handler
        trio.run(until_signalled, main, (signal.SIGINT,))
    if answers:
        return answers[0]
    view.cancelled()
    return None


def read_prompt(prompt: str) -> str:
    """The prompt argument, or stdin's text when it is `-`."""
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise click.UsageError("the prompt is empty; give it as an argument or on stdin with `-`")
    return prompt


@click.command()
@click.argument("prompt")
@click.option("--system", help="A system message the prompt follows.")
@query_options
@data_dir_option
@json_option
def ask(
    prompt: str,
    system: str | None,
    data_dir: Path,
    as_json: bool,
    show_trace: bool,
    **params: Any,
) -> None:
    """Ask the running local node; it answers with a Mixture-of-Agents of its peers.

    PROMPT `-` reads the prompt from stdin. Progress shows on stderr when it is a terminal,
    the answer streams to stdout; Ctrl-C cancels the query on the node (exit code 130).
    """
    try:
        text = read_prompt(prompt)
    except KeyboardInterrupt:
        click.echo("cancelled", err=True)
        sys.exit(130)
    request = conversation_request(params, conversation(system, [("user", text)]))
    view = AnswerView(text=not as_json, progress=not as_json and sys.stderr.isatty())
    answer = run_query(control_socket_path(data_dir), request, view)
    if answer is None:
        sys.exit(130)
    if as_json:
        print_json(answer)
        return
    view.finish(answer, params["max_tokens"])
    if show_trace:
        console.print(trace_tree(answer["trace"]))


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
