"""Messages for tests and attack drills: a well-formed presence with nothing measured yet."""

from __future__ import annotations

from typing import Any

import attrs

from dmoa_p2p.wire import Presence

_IDLE = Presence(
    peer_id="-",
    listen_addrs=(),
    models=("fake",),
    mean_service_s=None,
    service_var_s2=None,
    service_samples=0,
    queue_length=0,
    queue_capacity=1,
    arrival_rate=None,
    admitted_rate=None,
    interval_s=60.0,
)


def idle_presence(peer_id: str, **changes: Any) -> Presence:
    """The presence of an idle node `peer_id` that has measured nothing; `changes` as in
    `attrs.evolve` (e.g. `interval_s=1.0`, `listen_addrs=(...)`)."""
    presence: Presence = attrs.evolve(_IDLE, peer_id=peer_id, **changes)
    return presence
