"""How a node's reachability was decided, in words for `peers` and `node`."""

from __future__ import annotations

from typing import Any


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
