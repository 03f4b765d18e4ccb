"""The peers a node knew, kept in its data directory so that a restarted node finds them again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KNOWN_PEERS_FILE = "known_peers.json"
MAX_KNOWN_PEERS = 32  # enough to find the swarm again; a small file and a short burst of dials
MAX_ADDRS_PER_PEER = 4
MAX_ADDR_CHARS = 256
MAX_PEER_ID_CHARS = 128
_VERSION = 1


class KnownPeers:
    """Peer ids and listen addresses of peers this node completed a connection with, most
    recently seen first, at most `limit` of them; saved atomically (a temporary file renamed
    over the old one), so a crash mid-write leaves the previous file whole.

    Only the node's own verified peers are remembered, never addresses it was merely told of,
    so the file cannot be filled by others to make the node dial addresses of their choosing.
    """

    def __init__(self, path: Path, self_id: str, limit: int = MAX_KNOWN_PEERS) -> None:
        self.path = path
        self.self_id = self_id
        self.limit = limit
        self._peers: dict[str, tuple[float, tuple[str, ...]]] = {}  # id -> (seen, addrs)
        self._dirty = False

    @classmethod
    def load(cls, path: Path, self_id: str, limit: int = MAX_KNOWN_PEERS) -> KnownPeers:
        """The peers saved at `path`; none if there is no file, or (with a warning) if it is
        unreadable or not what `save` writes."""
        known = cls(path, self_id, limit)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return known
        except OSError as exc:
            log.warning("cannot read %s (%s): starting without remembered peers", path, exc)
            return known
        try:
            entries = _entries(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring %s, which is not a known-peers file (%s)", path, exc)
            return known
        for peer_id, seen, addrs in entries:
            known.remember(peer_id, addrs, seen)
        known._dirty = False
        return known

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> list[tuple[str, tuple[str, ...]]]:
        """(peer id, addresses), the most recently seen first."""
        ordered = sorted(self._peers.items(), key=lambda item: -item[1][0])
        return [(peer_id, addrs) for peer_id, (_, addrs) in ordered]

    def remember(self, peer_id: str, addrs: Iterable[str], seen: float) -> None:
        """Note that this node is connected to `peer_id`, which listens on `addrs`."""
        dialable = tuple(a for a in addrs if len(a) <= MAX_ADDR_CHARS and "/ip4/0.0.0.0/" not in a)[
            :MAX_ADDRS_PER_PEER
        ]
        if peer_id == self.self_id or not dialable or len(peer_id) > MAX_PEER_ID_CHARS:
            return
        old = self._peers.get(peer_id)
        self._put(peer_id, seen, dialable)
        # a newer time alone is no reason to write the file
        self._dirty = self._dirty or old is None or old[1] != dialable

    def save(self, *, force: bool = False) -> None:
        """Write the file if anything changed (or `force`); a failure is logged, not raised."""
        if not (self._dirty or force):
            return
        body = {
            "version": _VERSION,
            "peers": [
                {"peer_id": peer_id, "seen": seen, "addrs": list(addrs)}
                for peer_id, (seen, addrs) in self._peers.items()
            ],
        }
        try:
            _write_atomically(self.path, json.dumps(body, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("cannot save the known peers to %s: %s", self.path, exc)
            return
        self._dirty = False

    def _put(self, peer_id: str, seen: float, addrs: tuple[str, ...]) -> None:
        self._peers[peer_id] = (seen, addrs)
        if len(self._peers) > self.limit:
            oldest = min(self._peers, key=lambda p: self._peers[p][0])
            del self._peers[oldest]


def _entries(body: Any) -> list[tuple[str, float, tuple[str, ...]]]:
    """The file's valid entries; ValueError/TypeError/KeyError if its shape is wrong."""
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise ValueError(f"expected version {_VERSION}")
    entries = []
    for entry in body["peers"]:
        peer_id, seen, addrs = entry["peer_id"], entry["seen"], entry["addrs"]
        if not isinstance(peer_id, str) or not isinstance(seen, int | float):
            raise TypeError("peer_id must be a string and seen a number")
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise TypeError("addrs must be a list of strings")
        entries.append((peer_id, float(seen), tuple(addrs)))
    return entries


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
