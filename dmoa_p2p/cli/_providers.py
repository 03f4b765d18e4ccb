"""The providers command: which peers serve a model, as a running node finds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import trio
from rich import box
from rich.table import Table

from dmoa_p2p.cli._common import console, data_dir_option, json_option, print_json, user_errors
from dmoa_p2p.cli._peers import one_address, short_peer_id
from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import DEFAULT_PROVIDERS, call_control
from dmoa_p2p.overlay import MAX_PROVIDERS


@click.command()
@click.argument("model", required=False)
@data_dir_option
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PROVIDERS),
    default=DEFAULT_PROVIDERS,
    show_default=True,
    help="Most peers to list.",
)
@json_option
def providers(model: str | None, data_dir: Path, limit: int, as_json: bool) -> None:
    """List peers that serve MODEL (default: the running node's own model), with their
    addresses: from the DHT's provider records, and from the presence of live peers."""
    path = control_socket_path(data_dir)
    with user_errors():
        answer = trio.run(lambda: call_control(path, "providers", model=model, limit=limit))
    if as_json:
        print_json(answer)
        return
    console.print(providers_table(answer))


def providers_table(answer: dict[str, Any]) -> Table:
    found = answer["providers"]
    table = Table(
        title=f"{len(found)} peers serve {answer['model']}",
        caption="full peer ids and addresses: dmoa-p2p providers --json",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    for column in ("peer", "via", "address"):
        table.add_column(column, no_wrap=True)
    for entry in found:
        table.add_row(short_peer_id(entry["peer_id"]), entry["via"], one_address(entry["addrs"]))
    return table
