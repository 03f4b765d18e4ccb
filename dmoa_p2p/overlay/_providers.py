"""Provider records as the overlay hands them out: keys checked, answers deduplicated, bounded."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable

from dmoa_p2p.identity import public_key_from_peer_id
from dmoa_p2p.overlay._protocol import Provider

MAX_KEY_CHARS = 256
MAX_PROVIDERS = 64  # the most `find_providers` may be asked for
MAX_ADDRS_PER_PROVIDER = 8  # a host's interfaces and a relay or two
MAX_ADDR_CHARS = 256
# records examined per lookup: enough for MAX_PROVIDERS told by each of the 20 closest peers
MAX_EXAMINED = 20 * MAX_PROVIDERS
_ADDR = re.compile(r"(/[\w.:%-]+)+")
_WILDCARD = re.compile(r"/ip4/0\.0\.0\.0(/|$)|/ip6/::(/|$)")
_DHT_NAMESPACE = b"dmoa-p2p/"


def check_key(key: str) -> str:
    """`key` if an overlay may announce or look it up; ValueError saying why not."""
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ValueError(f"a provider key is 1 to {MAX_KEY_CHARS} printable characters")
    return key


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PROVIDERS:
        raise ValueError(f"limit must be from 1 to {MAX_PROVIDERS}, not {limit}")
    return limit


def dht_key(key: str) -> bytes:
    """The DHT key of `key`: a sha2-256 multihash, namespaced so that no other application's
    records (IPFS content, say) share it."""
    return b"\x12\x20" + hashlib.sha256(_DHT_NAMESPACE + check_key(key).encode()).digest()


def model_key(model: str) -> str:
    """The provider key under which nodes serving `model` announce it."""
    return check_key(f"model/{model}")


def checked_providers(
    found: Iterable[tuple[str, Iterable[str]]], *, own_peer_id: str, limit: int
) -> list[Provider]:
    """Providers from what a lookup returned, (peer id, addresses) pairs from any peer.

    Each provider once (py-libp2p's lookups repeat them, trap G11), in the order first told,
    at most `limit`; never this node; only Ed25519 peer ids (every dmoa-p2p node's kind); at
    most MAX_ADDRS_PER_PROVIDER addresses each, every one a full multiaddr of that peer
    (see `usable_addr`).
    """
    kept: dict[str, list[str]] = {}
    for peer_id, addrs in itertools.islice(found, MAX_EXAMINED):
        if peer_id == own_peer_id or public_key_from_peer_id(peer_id) is None:
            continue
        if peer_id not in kept:
            if len(kept) >= limit:
                continue
            kept[peer_id] = []
        held = kept[peer_id]
        for addr in itertools.islice(addrs, MAX_EXAMINED):
            full = usable_addr(addr, peer_id)
            if full is not None and full not in held and len(held) < MAX_ADDRS_PER_PROVIDER:
                held.append(full)
    return [Provider(peer_id, tuple(addrs)) for peer_id, addrs in kept.items()]


def usable_addr(addr: str, peer_id: str) -> str | None:
    """`addr` as a full multiaddr of `peer_id` (…/p2p/<peer_id>), or None when it cannot be
    one: too long, not a multiaddr's shape, a wildcard (dialling 0.0.0.0 reaches oneself,
    trap G4) or naming another peer."""
    if len(addr) > MAX_ADDR_CHARS or not _ADDR.fullmatch(addr) or _WILDCARD.match(addr):
        return None
    suffix = f"/p2p/{peer_id}"
    if addr.endswith(suffix):
        return addr
    _head, p2p, last = addr.rpartition("/p2p/")
    if p2p and "/" not in last:
        return None  # ends with another peer's id
    return addr + suffix
