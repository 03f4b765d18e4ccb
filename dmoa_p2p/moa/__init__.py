"""Distributed Mixture-of-Agents: query planning, layers of proposals, aggregation, traces."""

from dmoa_p2p.moa._types import (
    Aggregator,
    Composition,
    LayerPlan,
    PeerLoad,
    Plan,
    PromptMode,
    QueryRequest,
    Strategy,
    TokenBudget,
)
from dmoa_p2p.moa.engine import MoaEngine
from dmoa_p2p.moa.trace import Answer, CallRecord, LayerRecord, MissingProposer, Trace

__all__ = [
    "Aggregator",
    "Answer",
    "CallRecord",
    "Composition",
    "LayerPlan",
    "LayerRecord",
    "MissingProposer",
    "MoaEngine",
    "PeerLoad",
    "Plan",
    "PromptMode",
    "QueryRequest",
    "Strategy",
    "TokenBudget",
    "Trace",
]
