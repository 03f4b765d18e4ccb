"""`counting`: delivers like `direct`, counts per peer, and reports failures as PeerUnreachable."""

import pytest
import trio
import trio.testing
from dmoa_plugin_template import CountingGossip

from dmoa_p2p.gossip import DirectGossip, PeerUnreachable
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.registry import PluginOptionsError, create_plugin
from dmoa_p2p.wire import Envelope, RejectReason, WireError


async def test_sends_to_a_direct_peer_and_hears_why_it_was_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gossip = create_plugin("gossip", "counting")
    assert isinstance(gossip, CountingGossip)
    received: list[bytes] = []

    def admit(data: bytes, _publisher: str | None) -> Envelope:
        received.append(data)
        raise WireError(RejectReason.MALFORMED, "this test accepts nothing")

    async def deliver(envelope: Envelope) -> None:
        raise AssertionError("admit rejected everything")

    network = MemoryNetwork(latency_s=0.01)
    async with (
        network.open_overlay(NodeIdentity.generate()) as ours,
        network.open_overlay(NodeIdentity.generate()) as theirs,
        trio.open_nursery() as nursery,
    ):
        await gossip.start(ours, admit, deliver, nursery)
        await DirectGossip().start(theirs, admit, deliver, nursery)  # a node running `direct`
        await ours.connect(theirs.listen_addrs[0])
        assert gossip.can_reach(ours, theirs.peer_id)
        # the receiver checks each message before acknowledging it, and says why not
        with pytest.raises(PeerUnreachable, match="rejected: malformed: this test accepts"):
            await gossip.send(ours, theirs.peer_id, b"task")
        assert received == [b"task"]
        with pytest.raises(PeerUnreachable, match="not connected"):
            await gossip.send(ours, "nobody", b"task")
        assert not gossip.can_reach(ours, "nobody")
        assert gossip.sent == {}
        assert gossip.unreachable == {theirs.peer_id: 1, "nobody": 1}


def test_it_takes_no_options() -> None:
    with pytest.raises(PluginOptionsError, match="takes no options"):
        create_plugin("gossip", "counting", {"verbose": "1"})
