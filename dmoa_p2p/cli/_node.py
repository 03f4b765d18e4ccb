"""Commands about one node: keygen, node, peers."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click
import trio
from click.core import ParameterSource
from rich import box
from rich.table import Table

from dmoa_p2p.app import App, serve_app
from dmoa_p2p.cli._common import (
    backend_options,
    check_plugin_name,
    console,
    data_dir_option,
    json_option,
    mdns_option,
    node_default,
    parse_backend_options,
    parse_named_options,
    print_json,
    run_until_signalled,
    user_errors,
)
from dmoa_p2p.config import BOOTSTRAP_FORM, REACHABILITIES, NodeConfig, control_socket_path
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


NODE_HELP_EPILOG = """\b
Environment: an option not given on the command line comes from DMOA_P2P_NODE_<OPTION>
(its name is shown as [env var: ...]), e.g. DMOA_P2P_NODE_BACKEND=fake; a repeatable
option takes a space-separated list there. --data-dir reads DMOA_P2P_DATA_DIR and
--api-key DMOA_P2P_API_KEY. Precedence: command line, environment, --config file,
defaults; a table such as [backend_options] merges key by key with -o.
\b
Settings without an option (missed_presence_limit, max_dialed_peers, control_socket)
go in the --config file; examples/node.toml shows every key.
"""


@click.command(epilog=NODE_HELP_EPILOG)
@data_dir_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DMOA_P2P_NODE_CONFIG",
    show_envvar=True,
    help="TOML file with node settings (examples/node.toml); options override it.",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="MULTIADDR",
    default=node_default("listen_addrs"),
    show_default=True,
    show_envvar=True,
    help="Address to listen on (repeatable).",
)
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="MULTIADDR",
    show_default="none: this node starts a swarm",
    show_envvar=True,
    help=f"A known peer, {BOOTSTRAP_FORM} (repeatable).",
)
@click.option(
    "--relay/--no-relay",
    "relay_service",
    default=node_default("relay_service"),
    show_default=True,
    show_envvar=True,
    help="Relay (circuit relay v2) for nodes behind NAT when this node is publicly reachable.",
)
@mdns_option
@click.option(
    "--reachability",
    type=click.Choice(REACHABILITIES),
    default=node_default("reachability"),
    show_default=True,
    show_envvar=True,
    help="Whether peers can dial this node; auto: not if it listens on private addresses only.",
)
@click.option(
    "--presence-interval",
    type=click.FloatRange(0.1, 60.0),
    default=node_default("presence_interval_s"),
    show_default=True,
    show_envvar=True,
    help="Seconds between presence messages.",
)
@backend_options
@click.option(
    "--gossip",
    default=node_default("gossip"),
    show_default=True,
    show_envvar=True,
    help="How tasks travel: direct (streams) or pubsub.",
)
@click.option(
    "--gossip-option",
    multiple=True,
    metavar="KEY=VALUE",
    show_envvar=True,
    help="A gossip policy setting (repeatable). [default: the policy's own]",
)
@click.option(
    "--strategy-option",
    multiple=True,
    metavar="NAME:KEY=VALUE",
    show_envvar=True,
    help="A setting of strategy NAME, used when a query names it (repeatable).",
)
@click.option(
    "--aggregator-option",
    multiple=True,
    metavar="NAME:KEY=VALUE",
    show_envvar=True,
    help="A setting of aggregator NAME, used when a query names it (repeatable).",
)
@click.option(
    "--queue-capacity",
    type=click.IntRange(1),
    default=node_default("queue_capacity"),
    show_default=True,
    show_envvar=True,
    help="Prompts the queue holds.",
)
@click.option(
    "--admission",
    default=node_default("admission"),
    show_default=True,
    show_envvar=True,
    help="Admission policy: none, threshold, degrade, cap (see `dmoa-p2p plugins`).",
)
@click.option(
    "--admission-option",
    multiple=True,
    metavar="KEY=VALUE",
    show_envvar=True,
    help="A policy setting, e.g. rho_max=0.9 or cap=32 (repeatable).",
)
@click.option(
    "--http",
    "http_bind",
    metavar="[HOST:]PORT",
    envvar="DMOA_P2P_NODE_HTTP",
    show_default="off",
    show_envvar=True,
    help="Serve the OpenAI-compatible API, /metrics and /status here (host: 127.0.0.1).",
)
@click.option(
    "--api-key",
    envvar="DMOA_P2P_API_KEY",
    show_envvar=True,
    show_default="none",
    help="Bearer key the HTTP API requires; needed to bind beyond 127.0.0.1.",
)
@json_option
@click.pass_context
def node(ctx: click.Context, /, config_file: Path | None, as_json: bool, **params: Any) -> None:
    """Run a node until Ctrl-C: join the overlay and serve this user and its peers."""
    # a value click filled in from its default must not override the --config file
    given = {
        name: value
        for name, value in params.items()
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    overrides = node_overrides(given)
    with user_errors():
        config = load_config(config_file, overrides, str(params["data_dir"]))
        # bound now so that a taken port is a one-line error, not a failure deep in startup
        http_socket = bind_http_socket(config.http) if config.http else None

    async def main(nursery: trio.Nursery) -> None:
        running = await nursery.start(functools.partial(serve_app, config, http_socket))
        _announce(running, as_json)
        await trio.sleep_forever()

    run_until_signalled(main)


# NodeConfig fields each option sets, by the option's parameter name
_SETS_FIELD = {
    "data_dir": "data_dir",
    "listen": "listen_addrs",
    "bootstrap": "bootstrap",
    "relay_service": "relay_service",
    "reachability": "reachability",
    "mdns": "mdns",
    "presence_interval": "presence_interval_s",
    "backend": "backend",
    "gossip": "gossip",
    "queue_capacity": "queue_capacity",
    "admission": "admission",
    "http_bind": "http",
    "api_key": "http_api_key",
}
_SETS_OPTIONS = ("backend_option", "gossip_option", "admission_option")
_SETS_NAMED_OPTIONS = ("strategy_option", "aggregator_option")


def node_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """NodeConfig values from the options the user gave (None: not given)."""
    overrides: dict[str, Any] = {}
    for param, field in _SETS_FIELD.items():
        value = given.get(param)
        overrides[field] = list(value) if isinstance(value, tuple) else value
    for param in (*_SETS_OPTIONS, *_SETS_NAMED_OPTIONS):
        flag = "--" + param.replace("_", "-")
        parse = parse_named_options if param in _SETS_NAMED_OPTIONS else parse_backend_options
        overrides[param + "s"] = parse(given.get(param, ()), flag)
    if "data_dir" in given:
        overrides["data_dir"] = str(given["data_dir"])
    # False is a value given (--no-relay); an empty list or table is not
    return {
        field: value if isinstance(value, bool) else value or None
        for field, value in overrides.items()
    }


def load_config(config_file: Path | None, overrides: dict[str, Any], data_dir: str) -> NodeConfig:
    """The node's configuration: `overrides` (those not None) over the file, over defaults;
    PluginError, with the closest name, for a plugin that is not installed."""
    if config_file is not None:
        config = NodeConfig.from_toml(config_file, defaults={"data_dir": data_dir}, **overrides)
    else:
        given = {k: v for k, v in overrides.items() if v is not None}
        config = NodeConfig.from_mapping({"data_dir": data_dir, **given})
    for kind, name in (
        ("backend", config.backend),
        ("gossip", config.gossip),
        ("admission", config.admission),
        *(("strategy", name) for name in config.strategy_options),
        *(("aggregator", name) for name in config.aggregator_options),
    ):
        check_plugin_name(kind, name)
    return config


def _announce(running: App, as_json: bool) -> None:
    node = running.node
    if as_json:
        addrs, http = list(node.listen_addrs), list(running.http_urls)
        print_json({"peer_id": node.peer_id, "listen_addrs": addrs, "http": http})
        return
    if not node.listen_addrs:  # behind NAT, until a relay grants it a reservation
        console.print(
            f"node [bold]{node.peer_id}[/]: not publicly reachable; peers can dial it once a "
            "relay grants it a reservation (see `dmoa-p2p peers`)"
        )
    else:
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
                "reachability": status["reachability"],
                "rejected_messages": status["messages"]["rejected"],
                "refusals": status["refusals"],
            }
        )
        return
    console.print(peers_table(status))
    console.print(reachability_line(status["reachability"]))
    rejected = status["messages"]["rejected"]
    if rejected:
        console.print("rejected messages: " + ", ".join(f"{k}={v}" for k, v in rejected.items()))
    refused = {k: v for k, v in status["refusals"].items() if v}
    if refused:
        console.print("refused: " + ", ".join(f"{k}={v}" for k, v in refused.items()))
    if status["pending_peers"]:
        console.print(f"{status['pending_peers']} more peers heard of, not reached yet")


def reachability_line(reachability: dict[str, Any]) -> str:
    """How peers reach this node, in one line (public: as its listen addresses suggest)."""
    if reachability["public"]:
        relaying = ", relaying for nodes behind NAT" if reachability["relaying"] else ""
        return f"reachable directly (by its addresses){relaying}"
    relays = [one_address([addr]) for addr in reachability["relays"]]
    if not relays:
        return "not publicly reachable, and no relay holds a reservation for it yet"
    return "not publicly reachable; reached through relay " + ", ".join(relays)


def peers_table(status: dict[str, Any]) -> Table:
    """The node itself (first, seen "self") and its peers, in 80 columns: short peer ids and
    one address each; `peers --json` has them in full."""
    table = Table(
        title=f"{len(status['peers'])} peers seen by {short_peer_id(status['peer_id'])}",
        caption="full peer ids and addresses: dmoa-p2p peers --json",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    table.add_column("peer", min_width=13, no_wrap=True)
    for column, width in (("address", _ADDRESS_CHARS), ("model", _MODEL_CHARS)):
        table.add_column(column, max_width=width, no_wrap=True, overflow="ellipsis")
    for column in ("queue", "α s", "λ /s", "seen"):
        table.add_column(column, justify="right", no_wrap=True)
    own = status["queue"]
    table.add_row(
        short_peer_id(status["peer_id"]),
        one_address(status["listen_addrs"]),
        status["plugins"]["model"],
        f"{own['length']}/{own['capacity']}",
        _maybe(own["mean_service_s"]),
        _maybe(own["arrival_rate"]),
        "self",
        style="bold",
    )
    for peer in status["peers"]:
        table.add_row(
            short_peer_id(peer["peer_id"]),
            one_address(peer["listen_addrs"]),
            ", ".join(peer["models"]) or "-",
            f"{peer['queue_length']}/{peer['queue_capacity']}",
            _maybe(peer["mean_service_s"]),
            _maybe(peer["arrival_rate"]),
            _ago(peer["last_seen_s"]),
        )
    return table


_ADDRESS_CHARS, _MODEL_CHARS = 24, 14  # with the rest, a row is 80 columns at most


def _ago(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


def short_peer_id(peer_id: str) -> str:
    """12D3KooW…abcd: the head says what kind of key, the tail tells peers apart."""
    return peer_id if len(peer_id) <= 13 else f"{peer_id[:8]}…{peer_id[-4:]}"


def one_address(addrs: list[str]) -> str:
    """The first address others can reach (loopback last) as HOST:PORT, "+N" for the rest."""
    if not addrs:
        return "-"
    ordered = sorted(addrs, key=lambda a: a.startswith(("/ip4/127.", "/ip6/::1/")))
    relay, through, _ = ordered[0].partition("/p2p-circuit")
    if through:  # a node behind NAT: the relay it is reached through
        more = f" +{len(addrs) - 1}" if len(addrs) > 1 else ""
        return f"via {one_address([relay])}{more}"
    head, sep, _peer = ordered[0].rpartition("/p2p/")
    addr = head if sep else ordered[0]
    parts = addr.strip("/").split("/")
    if len(parts) == 4 and parts[0] in ("ip4", "ip6", "dns", "dns4", "dns6") and parts[2] == "tcp":
        addr = f"[{parts[1]}]:{parts[3]}" if parts[0] == "ip6" else f"{parts[1]}:{parts[3]}"
    return addr + (f" +{len(addrs) - 1}" if len(addrs) > 1 else "")


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
