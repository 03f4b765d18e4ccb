"""`dmoa-p2p peers`: the peers a running node sees, in 80 columns or as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import trio
from rich import box
from rich.table import Table

from dmoa_p2p.cli._common import console, data_dir_option, json_option, print_json, user_errors
from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import call_control


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


def how_decided(reachability: dict[str, Any]) -> str:
    """E.g. "3 peers dialled it back", from a status's `reachability` (older ones: a guess)."""
    source = reachability.get("source", "guess")
    if source == "configured":
        return "as configured"
    if source == "dial-back":
        if reachability["public"]:
            return f"{reachability['confirmed_by']} peers dialled it back"
        return f"{reachability['failed_by']} peers could not dial it back"
    return "by its addresses; no dial-back check yet"


def reachability_line(reachability: dict[str, Any]) -> str:
    """How peers reach this node, and how that was decided, in one line."""
    how = how_decided(reachability)
    if reachability["public"]:
        relaying = ", relaying for nodes behind NAT" if reachability["relaying"] else ""
        return f"reachable directly ({how}){relaying}"
    relays = [one_address([addr]) for addr in reachability["relays"]]
    if not relays:
        return f"not publicly reachable ({how}), and no relay holds a reservation for it yet"
    return f"not publicly reachable ({how}); reached through relay " + ", ".join(relays)


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
        address = one_address(peer["listen_addrs"])
        if address.startswith("via ") and peer.get("link") == "direct":
            address = "direct (hole punched)"  # reached through a relay first, then upgraded
        table.add_row(
            short_peer_id(peer["peer_id"]),
            address,
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
