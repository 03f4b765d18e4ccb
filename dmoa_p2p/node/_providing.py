"""Who serves a model: the node's own announced in the DHT, others' found there or in presence."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import trio

from dmoa_p2p.node._sampled_records import SignedPresence
from dmoa_p2p.overlay import Overlay, OverlayError, model_key

log = logging.getLogger(__name__)

# Announced again this often: far within any record's lifetime (py-libp2p keeps one 48 h),
# and soon enough after the peers holding the record left or closer ones joined.
ANNOUNCE_EVERY_S = 10 * 60.0
_FIRST_RETRY_S = 2.0  # a node that just started has no DHT peer yet


class ModelAnnouncer:
    """Keep a provider record for the node's model: as soon as a DHT peer takes it, then
    every ANNOUNCE_EVERY_S (retrying sooner, with a doubling pause, while none takes it)."""

    def __init__(self, overlay: Overlay, model: str) -> None:
        self._overlay = overlay
        self._model = model
        self.announced = 0  # announcements some peer took

    async def run(self) -> None:
        try:
            key = model_key(self._model)
        except ValueError:
            log.warning("model name %r cannot be announced in the DHT", self._model)
            return
        retry_s = _FIRST_RETRY_S
        while True:
            if await self._announce(key):
                self.announced += 1
                retry_s = _FIRST_RETRY_S
                await trio.sleep(ANNOUNCE_EVERY_S)
            else:
                await trio.sleep(retry_s)
                retry_s = min(retry_s * 2, ANNOUNCE_EVERY_S)

    async def _announce(self, key: str) -> bool:
        if not self._overlay.connected_peers():
            return False
        try:
            return await self._overlay.provide(key)
        except OverlayError as exc:
            log.debug("announcing %s failed: %s", key, exc)
            return False


async def model_providers(
    overlay: Overlay, model: str, limit: int, live: Iterable[SignedPresence]
) -> list[dict[str, Any]]:
    """Up to `limit` other peers serving `model`, as JSON: those whose provider record the DHT
    holds ("via": "dht"), then live peers whose presence names the model ("presence"); a LAN
    of private nodes has no DHT server (see `ProviderRecords`), yet presence reaches it."""
    found = [
        {**provider.to_json(), "via": "dht"}
        for provider in await overlay.find_providers(model_key(model), limit)
    ]
    listed = {entry["peer_id"] for entry in found}
    for record in live:
        if len(found) >= limit:
            break
        if model in record.presence.models and record.peer_id not in listed:
            addrs = list(record.presence.listen_addrs)
            found.append({"peer_id": record.peer_id, "addrs": addrs, "via": "presence"})
    return found
