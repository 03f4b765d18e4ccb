"""Commands about one node: keygen, node, peers."""

from __future__ import annotations

import functools
from pathlib import Path

import click
import trio
from rich.table import Table

from dmoa_p2p.app import App, serve_app
from dmoa_p2p.cli._common import (
    backend_options,
    console,
    data_dir_option,
    json_option,
    parse_backend_options,
    parse_named_options,
    print_json,
    run_until_signalled,
    user_errors,
)
from dmoa_p2p.config import DEFAULT_LISTEN, NodeConfig, control_socket_path
from dmoa_p2p.control import call_control
from dmoa_p2p.http import bind_http_socket
from dmoa_p2p.identity import KEY_FILE_NAME, NodeIdentity, load_or_create_identity, save_identity


@click.command()
@data_dir_option
@click.option("--force", is_flag=True, help="Replace an existing key (the peer id changes).")
def keygen(data_dir: Path, force: bool) -> None:
    """Create the node's Ed25519 key and print its peer id."""
    path = data_dir / KEY_FILE_NAME
    with user_errors():
        if path.exists() and not force:
            identity = load_or_create_identity(data_dir)
            console.print(f"{path} exists already (use --force to replace it)", style="yellow")
        else:
            identity = NodeIdentity.generate()
            save_identity(identity, path)
    click.echo(identity.peer_id)


@click.command()
@data_dir_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with node settings; command-line options override it.",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="MULTIADDR",
    help=f"Address to listen on (repeatable). [default: {DEFAULT_LISTEN}]",
)
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="MULTIADDR",
    help="A known peer, /ip4/HOST/tcp/PORT/p2p/PEER_ID (repeatable).",
)
@click.option(
    "--presence-interval",
    type=click.FloatRange(0.1, 60.0),
    help="Seconds between presence messages.",
)
@backend_options
@click.option("--gossip", help="How tasks travel: direct (streams) or pubsub. [default: direct]")
@click.option(
    "--gossip-option", multiple=True, metavar="KEY=VALUE", help="A gossip policy setting."
)
@click.option(
    "--strategy-option",
    multiple=True,
    metavar="NAME:KEY=VALUE",
    help="A setting of strategy NAME, used when a query names it (repeatable).",
)
@click.option(
    "--aggregator-option",
    multiple=True,
    metavar="NAME:KEY=VALUE",
    help="A setting of aggregator NAME, used when a query names it (repeatable).",
)
@click.option("--queue-capacity", type=click.IntRange(1), help="Prompts the queue holds.")
@click.option(
    "--admission", help="Admission policy: none, threshold, degrade, cap. [default: none]"
)
@click.option(
    "--admission-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A policy setting, e.g. rho_max=0.9 or cap=32 (repeatable).",
)
@click.option(
    "--http",
    "http_bind",
    metavar="[HOST:]PORT",
    help="Serve the OpenAI-compatible API, /metrics and /status here (host: 127.0.0.1).",
)
@click.option(
    "--api-key",
    envvar="DMOA_P2P_API_KEY",
    show_envvar=True,
    help="Bearer key the HTTP API requires; needed to bind beyond 127.0.0.1.",
)
@json_option
def node(
    data_dir: Path,
    config_file: Path | None,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    presence_interval: float | None,
    backend: str | None,
    backend_option: tuple[str, ...],
    gossip: str | None,
    gossip_option: tuple[str, ...],
    strategy_option: tuple[str, ...],
    aggregator_option: tuple[str, ...],
    queue_capacity: int | None,
    admission: str | None,
    admission_option: tuple[str, ...],
    http_bind: str | None,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Run a node until Ctrl-C: join the overlay and serve this user and its peers."""
    overrides = {
        "data_dir": str(data_dir),
        "listen_addrs": list(listen) or None,
        "bootstrap": list(bootstrap) or None,
        "presence_interval_s": presence_interval,
        "backend": backend,
        "backend_options": parse_backend_options(backend_option) or None,
        "gossip": gossip,
        "gossip_options": parse_backend_options(gossip_option) or None,
        "strategy_options": parse_named_options(strategy_option) or None,
        "aggregator_options": parse_named_options(aggregator_option) or None,
        "queue_capacity": queue_capacity,
        "admission": admission,
        "admission_options": parse_backend_options(admission_option) or None,
        "http": http_bind,
        "http_api_key": api_key or None,
    }
    with user_errors():
        if config_file is not None:
            config = NodeConfig.from_toml(config_file, **overrides)
        else:
            config = NodeConfig.from_mapping({k: v for k, v in overrides.items() if v is not None})
        # bound now so that a taken port is a one-line error, not a failure deep in startup
        http_socket = bind_http_socket(config.http) if config.http else None

    async def main(nursery: trio.Nursery) -> None:
        running = await nursery.start(functools.partial(serve_app, config, http_socket))
        _announce(running, as_json)
        await trio.sleep_forever()

    run_until_signalled(main)


def _announce(running: App, as_json: bool) -> None:
    node = running.node
    if as_json:
        print_json(
            {
                "peer_id": node.peer_id,
                "listen_addrs": list(node.listen_addrs),
                "http": list(running.http_urls),
            }
        )
        return
    console.print(f"node [bold]{node.peer_id}[/] listening on:")
    for addr in node.listen_addrs:
        console.print(f"  {addr}", soft_wrap=True)
    for url in running.http_urls:
        console.print(f"OpenAI API: {url}/v1  status: {url}/status", soft_wrap=True)
    console.print("Ctrl-C stops it.", style="dim")


@click.command()
@data_dir_option
@json_option
def peers(data_dir: Path, as_json: bool) -> None:
    """Show the peers a running node sees (its peer view) and what it rejected or refused."""
    with user_errors():
        status = trio.run(call_control, control_socket_path(data_dir), "status")
    if as_json:
        print_json(
            {
                "peer_id": status["peer_id"],
                "peers": status["peers"],
                "pending_peers": status["pending_peers"],
                "rejected_messages": status["messages"]["rejected"],
                "refusals": status["refusals"],
            }
        )
        return
    table = Table(title=f"peers seen by {status['peer_id']}")
    for column in ("peer id", "address", "models", "queue", "service s", "λ /s", "seen s ago"):
        table.add_column(column)
    for peer in status["peers"]:
        table.add_row(
            peer["peer_id"],
            "\n".join(peer["listen_addrs"]),
            ", ".join(peer["models"]) or "-",
            f"{peer['queue_length']}/{peer['queue_capacity']}",
            _maybe(peer["mean_service_s"]),
            _maybe(peer["arrival_rate"]),
            f"{peer['last_seen_s']:.1f}",
        )
    console.print(table)
    rejected = status["messages"]["rejected"]
    if rejected:
        console.print("rejected messages: " + ", ".join(f"{k}={v}" for k, v in rejected.items()))
    refused = {k: v for k, v in status["refusals"].items() if v}
    if refused:
        console.print("refused: " + ", ".join(f"{k}={v}" for k, v in refused.items()))
    if status["pending_peers"]:
        console.print(f"{status['pending_peers']} more peers heard of, not reached yet")


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
