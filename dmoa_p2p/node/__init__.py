"""The node: overlay, queue, MoA engine and peer sampling (signed records, shuffles)."""

from dmoa_p2p.node._neighbours import Neighbours
from dmoa_p2p.node._node import Node, OverlayOpener, open_node
from dmoa_p2p.node._prompts import AdmittedPrompt, load_admission
from dmoa_p2p.node._sampled_records import RecordVerifier, SignedPresence, issue_signed_presence
from dmoa_p2p.node._sampler import PeerSampler, WireEntries
from dmoa_p2p.node._sampling import (
    Connectable,
    PartialView,
    PendingShuffle,
    SampleStream,
    SamplingConfig,
    Shuffle,
    ViewEntry,
    choose_proposers,
    eligible_proposers,
    read_entries,
)
from dmoa_p2p.node._sampling_service import SHUFFLE_PROTOCOL, SamplingService, offer_records
from dmoa_p2p.node._snapshot import NodeSnapshot, PeerEntry, SwarmLoad, finite

__all__ = [
    "SHUFFLE_PROTOCOL",
    "AdmittedPrompt",
    "Connectable",
    "Neighbours",
    "Node",
    "NodeSnapshot",
    "OverlayOpener",
    "PartialView",
    "PeerEntry",
    "PeerSampler",
    "PendingShuffle",
    "RecordVerifier",
    "SampleStream",
    "SamplingConfig",
    "SamplingService",
    "Shuffle",
    "SignedPresence",
    "SwarmLoad",
    "ViewEntry",
    "WireEntries",
    "choose_proposers",
    "eligible_proposers",
    "finite",
    "issue_signed_presence",
    "load_admission",
    "offer_records",
    "open_node",
    "read_entries",
]
