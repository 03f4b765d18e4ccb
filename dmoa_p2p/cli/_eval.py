"""`dmoa-p2p eval`: does the swarm answer better than one model? Scored by code, offline."""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import httpx
import trio
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dmoa_p2p.cli._common import (
    backend_options,
    check_plugin_name,
    console,
    json_option,
    parse_backend_options,
    print_json,
    until_signalled,
    user_errors,
    verbosity,
)
from dmoa_p2p.eval import (
    BUILT_IN_SETS,
    Configuration,
    EvalError,
    EvalSettings,
    Item,
    ResultsFile,
    Row,
    Target,
    default_grid,
    load_set,
    parse_configurations,
    plot_rows,
    run_eval,
    summarise,
    write_alpaca_outputs,
)
from dmoa_p2p.swarm import SwarmError, backend_args, member_http, open_process_swarm

JOIN_TIMEOUT_S = 120.0


@click.command("eval")
@click.option(
    "--base-url",
    metavar="URL",
    help="Evaluate this running OpenAI-compatible server (a dmoa-p2p node, llama-server, "
    "Ollama...) instead of starting a swarm, e.g. http://127.0.0.1:8080.",
)
@click.option("--model", help="The model to ask at --base-url. [default: its own or first]")
@click.option(
    "--nodes",
    type=click.IntRange(1, 16),
    default=3,
    show_default=True,
    help="Without --base-url: node processes to start on 127.0.0.1; node 0 is asked.",
)
@backend_options
@click.option(
    "--node-option",
    multiple=True,
    metavar="I:KEY=VALUE",
    help="A backend setting for node I only, e.g. 1:model=/models/other.gguf (repeatable).",
)
@click.option(
    "--http-base-port",
    type=click.IntRange(1024, 65000),
    default=18700,
    show_default=True,
    help="Node i of the started swarm serves its API on 127.0.0.1 at this port + i.",
)
@click.option(
    "--sets",
    default=",".join(BUILT_IN_SETS),
    show_default=True,
    help="Question sets: built-in names or JSONL files (schema in the README).",
)
@click.option(
    "--count", type=click.IntRange(1), help="Items per set. [default: all; arithmetic 200]"
)
@click.option(
    "--configs",
    metavar="NAMES",
    help="Comma-separated configurations: one, m<M>k<K>-<strategy>-<aggregator>, "
    "self-k<K>-<aggregator>. [default: the full grid; see --list-configs]",
)
@click.option("--list-configs", is_flag=True, help="Print the default grid and exit.")
@click.option("--repeats", type=click.IntRange(1), default=1, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True)
@click.option(
    "--sample-temperature",
    type=click.FloatRange(0, 2, min_open=True),
    default=0.7,
    show_default=True,
    help="Temperature of Self-MoA's k + 1 samples.",
)
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Questions in flight at once (queues form above 1).",
)
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("dmoa-eval.jsonl"),
    show_default=True,
    help="Answers are appended here; a rerun with the same settings resumes.",
)
@click.option(
    "--report-only",
    is_flag=True,
    help="Ask nothing: the table, --plot and --alpaca-dir of what --results holds for "
    "these sets and configurations (with the settings it was made with).",
)
@click.option(
    "--alpaca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write AlpacaEval model outputs here, one JSON file per configuration.",
)
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the PNG plot here."
)
@json_option
def eval_command(**options: Any) -> None:
    """Score configurations of the swarm against one model on question sets checked by code.

    \b
    Sets (the project's own, shipped in the package):
      arithmetic    sums, products and counting, generated from --seed (4 levels)
      knowledge     185 facts with one right answer: short answers, multiple choice
      instructions  125 instructions whose compliance a function checks

    \b
    Each configuration is compared with `one` (the asked node's model alone) on the same
    items: accuracy with a Wilson 95 % interval, the paired difference with a bootstrap
    interval and the exact McNemar p-value; latency p50/p95; the mean queue length of the
    nodes while it ran; model calls and tokens per answer. A failed answer counts as wrong.
    """
    if options["list_configs"]:
        for configuration in default_grid():
            click.echo(configuration.name)
        return
    with user_errors(also=(EvalError, SwarmError)):
        configurations = parse_configurations(options["configs"])
        for configuration in configurations:  # installed here: the nodes load the same ones
            check_plugin_name("aggregator", configuration.aggregator)
            if configuration.needs_swarm:
                check_plugin_name("strategy", configuration.strategy)
        items = _items(options)
        settings = EvalSettings(
            seed=options["seed"],
            repeats=options["repeats"],
            temperature=options["temperature"],
            sample_temperature=options["sample_temperature"],
            max_tokens=options["max_tokens"],
            concurrency=options["concurrency"],
        )
        target = _target_description(options)
        if options["report_only"] and not options["results"].exists():
            raise EvalError(f"nothing to report: {options['results']} does not exist")
        results = ResultsFile(options["results"], {**settings.to_json(), "target": target})
        if not options["report_only"]:
            _run(options, target, items, configurations, settings, results)
    rows = summarise(results, configurations, items)
    if options["plot"] is not None:
        plot_rows(rows, options["plot"], _title(target, settings))
    alpaca: Path | None = options["alpaca_dir"]
    written = write_alpaca_outputs(results, items, alpaca) if alpaca else []
    if options["as_json"]:
        print_json(
            {
                "settings": results.settings,
                "results_file": str(results.path),
                "rows": [row.to_json() for row in rows],
                "plot": str(options["plot"]) if options["plot"] else None,
                "alpaca_outputs": [str(p) for p in written],
            }
        )
        return
    console.print(_table(rows, _title(target, settings)))
    for path in (options["plot"], *written):
        if path is not None:
            console.print(f"written: {path}", style="dim")


def _items(options: dict[str, Any]) -> list[Item]:
    items: list[Item] = []
    for name in (s.strip() for s in options["sets"].split(",") if s.strip()):
        items += load_set(name, seed=options["seed"], count=options["count"])
    if not items:
        raise EvalError("no question set named; use --sets arithmetic,knowledge,instructions")
    return items


def _target_description(options: dict[str, Any]) -> dict[str, Any]:
    if options["base_url"]:
        return {"base_url": options["base_url"].rstrip("/"), "model": options["model"]}
    backend = options["backend"]
    if backend:
        check_plugin_name("backend", backend)
    own: dict[str, dict[str, str]] = {}
    for text in options["node_option"]:
        index, sep, setting = text.partition(":")
        if not sep or not index.isdigit() or int(index) >= options["nodes"]:
            raise EvalError(
                f"--node-option {text!r}: use I:KEY=VALUE with I a node index below "
                f"{options['nodes']}"
            )
        own.setdefault(index, {}).update(parse_backend_options((setting,), "--node-option"))
    return {
        "nodes": options["nodes"],
        "backend": backend,
        "backend_options": parse_backend_options(options["backend_option"]),
        "node_options": own,
    }


def _run(
    options: dict[str, Any],
    target: dict[str, Any],
    items: list[Item],
    configurations: list[Configuration],
    settings: EvalSettings,
    results: ResultsFile,
) -> None:
    bar = Progress(
        TextColumn("eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("answers"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=options["as_json"],
    )

    finished = False

    async def main(_nursery: trio.Nursery) -> None:
        nonlocal finished
        with bar:
            task = bar.add_task("eval", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            async with httpx.AsyncClient() as client, _servers(options, target) as urls:
                model = target.get("model")
                targets = [await Target.connect(client, url, model) for url in urls]
                await run_eval(
                    targets[0], targets, items, configurations, settings, results, progress
                )
        finished = True

    # Ctrl-C or SIGTERM cancels the run, so the swarm it started stops with it
    trio.run(until_signalled, main, (signal.SIGINT, signal.SIGTERM))
    if not finished:
        raise click.ClickException(
            f"interrupted; the answers so far are in {results.path}: rerun the same command "
            "to go on"
        )


@contextlib.asynccontextmanager
async def _servers(options: dict[str, Any], target: dict[str, Any]) -> AsyncIterator[list[str]]:
    """The base URLs to ask (the first) and to sample: --base-url's, or those of a swarm
    started here once every node has joined."""
    if "base_url" in target:
        yield [target["base_url"]]
        return
    # every node is the user's own and one origin asks everything: held to a fair share of
    # each peer's model (μ/n), its MoA queries would lose proposers to refusals
    node_args = ["--no-fair-share", *backend_args(target["backend"], target["backend_options"])]
    member_args = {int(i): backend_args(None, own) for i, own in target["node_options"].items()}
    port, n = options["http_base_port"], target["nodes"]
    async with open_process_swarm(
        n, None, verbosity(), node_args, port, member_args=member_args
    ) as swarm:
        await swarm.wait_converged(JOIN_TIMEOUT_S)
        yield [f"http://{member_http(i, port)}" for i in range(n)]


def _title(target: dict[str, Any], settings: EvalSettings) -> str:
    where = target.get("base_url") or f"{target['nodes']} local nodes"
    return (
        f"dmoa-p2p eval: {where}, seed {settings.seed}, {settings.repeats} repeat(s), "
        f"temperature {settings.temperature:g}, max {settings.max_tokens} tokens"
    )


def _table(rows: list[Row], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=_CAPTION)
    for header in ("configuration", "set"):
        table.add_column(header, no_wrap=True)
    for header in ("n", "acc %", "95 %", "Δ pts", "95 %", "p", "p50 s", "p95 s", "q", "calls"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("tokens", justify="right")
    for row in rows:
        versus = row.against_baseline
        difference = ["", "", ""]
        if versus is not None:
            difference = [
                f"{100 * versus.difference:+.1f}",
                f"{100 * versus.low:+.0f}…{100 * versus.high:+.0f}",
                _p(versus.p_value),
            ]
        table.add_row(
            row.configuration,
            row.set,
            str(row.answers) + (f" ({row.failed} failed)" if row.failed else ""),
            f"{100 * row.accuracy:.1f}",
            f"{100 * row.low:.0f}–{100 * row.high:.0f}",
            *difference,
            _seconds(row.latency_p50_s),
            _seconds(row.latency_p95_s),
            "" if row.mean_queue is None else f"{row.mean_queue:.2f}",
            f"{row.inferences_per_answer:.1f}",
            f"{row.tokens_per_answer:.0f}",
        )
    return table


_CAPTION = (
    "acc: accuracy, Wilson 95 % interval; Δ: accuracy minus one's on the same items, paired "
    "bootstrap 95 %; p: exact McNemar (bold below 0.05); q: mean queue length of the nodes; "
    "calls, tokens: model calls and tokens per answer"
)


def _p(value: float) -> str:
    text = f"{value:.3f}" if value >= 0.001 else "<0.001"
    return f"[bold]{text}[/bold]" if value < 0.05 else text


def _seconds(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}"
