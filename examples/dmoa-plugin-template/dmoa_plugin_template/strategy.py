"""`first-peers` strategy: the same k peers in every layer, the first ones by peer id."""

import random
from collections.abc import Sequence

import attrs

from dmoa_p2p.moa import PeerLoad, Plan, QueryRequest, plan_layers


@attrs.frozen
class FirstPeersStrategy:
    """Asks the k first peers by peer id, starting `offset` places down the list (wrapping).

    The fields are the options: `create_plugin("strategy", "first-peers", {"offset": "2"})`
    converts "2" to an int and runs the validator. `plan_layers` builds the M layers (raw
    prompt first, then augmented) and notes when fewer than k peers are known; this class
    only says whom each layer asks. `peers` arrive live, without this node, sorted by id.
    """

    offset: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    def plan(self, request: QueryRequest, peers: Sequence[PeerLoad], rng: random.Random) -> Plan:
        return plan_layers(request, peers, rng, draw=self._draw)

    def _draw(self, peers: Sequence[PeerLoad], count: int, rng: random.Random) -> list[PeerLoad]:
        # count <= len(peers); no randomness here (a random draw would take it from `rng`)
        return [peers[(self.offset + i) % len(peers)] for i in range(count)]
