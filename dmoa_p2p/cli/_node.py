"""Commands about one node: keygen, node, peers."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click
import trio
from click.core import ParameterSource

from dmoa_p2p.app import App, serve_app
from dmoa_p2p.cli._common import (
    backend_options,
    check_plugin_name,
    console,
    data_dir_option,
    freeze_startup_heap,
    json_option,
    mdns_option,
    node_default,
    parse_backend_options,
    parse_named_options,
    print_json,
    run_until_signalled,
    user_errors,
)
from dmoa_p2p.config import BOOTSTRAP_FORM, REACHABILITIES, NodeConfig
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
Settings without an option (max_dialed_peers, view_size, neighbours, control_socket)
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
    "--fair-share/--no-fair-share",
    "fair_share",
    default=True,
    show_default=True,
    show_envvar=True,
    help="Hold each peer to its fair share of this node's model (μ/n tasks/s). Turn off "
    "only when every node of the swarm is yours: one asker may then use every idle model.",
)
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
        freeze_startup_heap()
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
    "fair_share": "fair_share",
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
