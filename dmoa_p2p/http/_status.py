"""`GET /status`: the node as JSON, or a small HTML page of the swarm as this node sees it."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

from dmoa_p2p.moa import DEFAULT_LAYERS, DEFAULT_PROPOSERS

REFRESH_S = 5
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; } th:first-child, td.id { text-align: left; }
.id { font-family: monospace; }
tr.self td { font-weight: bold; } .over { color: #b00; } .dim { color: #777; }
"""


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _row(cells: list[str], css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f"<tr{klass}>" + "".join(cells) + "</tr>"


def _peer_rows(status: dict[str, Any]) -> list[str]:
    point = status["operating_point"]
    rho_by_peer: dict[str, float] = point["rho_by_peer"]
    threshold = point["rho_threshold"]
    queue = status["queue"]
    me = {
        "peer_id": status["peer_id"],
        "models": [status["plugins"]["model"]],
        "queue_length": queue["length"],
        "queue_capacity": queue["capacity"],
        "mean_service_s": queue["mean_service_s"],
        "arrival_rate": queue["arrival_rate"],
        "last_seen_s": None,
    }
    rows = []
    for i, peer in enumerate([me, *status["peers"]]):
        rho = rho_by_peer.get(peer["peer_id"])
        over = rho is not None and rho >= threshold
        cells = [
            f'<td class="id">{escape(peer["peer_id"])}{" (this node)" if i == 0 else ""}</td>',
            f"<td>{escape(', '.join(peer['models']) or '–')}</td>",
            f"<td>{peer['queue_length']}/{peer['queue_capacity']}</td>",
            f"<td>{_number(peer['mean_service_s'])}</td>",
            f"<td>{_number(peer['arrival_rate'])}</td>",
            f'<td class="{"over" if over else ""}">{_number(rho, 2)}</td>',
            f"<td>{_number(peer['last_seen_s'], 2)}</td>",
        ]
        rows.append(_row(cells, "self" if i == 0 else ""))
    return rows


def _link(path: str, key: str | None) -> str:
    """`path` for an href, carrying the API key the page was opened with (see BearerAuth)."""
    if key is None:
        return escape(path)
    joined = f"{path}{'&' if '?' in path else '?'}{urlencode({'key': key})}"
    return escape(joined)


def status_html(status: dict[str, Any], key: str | None = None) -> str:
    """The page: who this node is, its peers and their load, ρ against the threshold.

    `key`, when the page was opened with `?key=...`, goes into its links so that they open
    too; the page reloads its own address, key included."""
    point = status["operating_point"]
    plugins = status["plugins"]
    rho = point["rho"]
    verdict = "" if rho is None else ("over" if rho >= point["rho_threshold"] else "below")
    headers = "".join(
        f"<th>{h}</th>"
        for h in ("peer", "models", "queue", "service s (α)", "prompts/s (λ)", "ρ", "seen s ago")
    )
    outcomes = ", ".join(f"{k} {v}" for k, v in status["prompts"].items()) or "none yet"
    rejected = ", ".join(f"{k} {v}" for k, v in status["messages"]["rejected"].items()) or "none"
    refused = ", ".join(f"{k} {v}" for k, v in status["refusals"].items() if v) or "none"
    http = ", ".join(status.get("http", ()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>dmoa-p2p node {escape(status["peer_id"][-8:])}</title><style>{_STYLE}</style></head>
<body>
<h1>dmoa-p2p node</h1>
<p class="id">{escape(status["peer_id"])}</p>
<p>{len(status["peers"])} peers in view, {len(status["connected_peers"])} connected.
Backend {escape(plugins["backend"])} ({escape(plugins["model"])}), gossip
{escape(plugins["gossip"])}, admission {escape(plugins["admission"])}.</p>
<h2>Swarm load</h2>
<p>ρ = <span class="{verdict}">{_number(rho, 2)}</span> (busiest device, for model
<code>dmoa</code>: M={DEFAULT_LAYERS}, k={DEFAULT_PROPOSERS});
threshold {point["rho_threshold"]:.2f} ({escape(point["threshold_source"])});
stable while each user asks fewer than {_number(point["max_stable_rate_per_s"])} prompts/s.</p>
<table id="peers"><thead><tr>{headers}</tr></thead>
<tbody>{"".join(_peer_rows(status))}</tbody></table>
<p>Prompts: {escape(outcomes)}. Rejected messages: {escape(rejected)}.
Refused: {escape(refused)}. Pending peers (heard of, not reached): {status["pending_peers"]}.</p>
<p class="dim">API: {escape(http)} · <a href="{_link("/status?format=json", key)}">JSON</a> ·
<a href="{_link("/metrics", key)}">metrics</a> · refreshes every {REFRESH_S} s</p>
</body></html>
"""
