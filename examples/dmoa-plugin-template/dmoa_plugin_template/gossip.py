"""`counting` gossip: the built-in `direct` streams, counting the messages sent to each peer."""

from collections import Counter

import trio

from dmoa_p2p.gossip import MOA_PROTOCOL, Admit, Deliver, DirectGossip, PeerUnreachable
from dmoa_p2p.overlay import Overlay, OverlayError


class CountingGossip:
    """Speaks `direct`'s protocol, so it works beside nodes running `direct`. One instance
    per node for the node's life: the counters add up from its start. `send` raises
    PeerUnreachable, nothing else, when it cannot deliver: the engine then asks another peer."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()  # messages each peer acknowledged
        self.unreachable: Counter[str] = Counter()  # messages that could not be delivered
        self._direct = DirectGossip()

    async def start(
        self, overlay: Overlay, admit: Admit, deliver: Deliver, nursery: trio.Nursery
    ) -> None:
        await self._direct.start(overlay, admit, deliver, nursery)  # the receive side as is

    async def send(self, overlay: Overlay, peer_id: str, data: bytes) -> None:
        try:
            await overlay.send(peer_id, MOA_PROTOCOL, data)
        except OverlayError as exc:
            self.unreachable[peer_id] += 1
            raise PeerUnreachable(f"{peer_id}: {exc}") from exc
        self.sent[peer_id] += 1

    def can_reach(self, overlay: Overlay, peer_id: str) -> bool:
        return self._direct.can_reach(overlay, peer_id)
