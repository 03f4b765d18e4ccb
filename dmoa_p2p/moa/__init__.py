"""Distributed Mixture-of-Agents: query planning, layers of proposals, aggregation, traces."""

from dmoa_p2p.moa._layer import LayerContext
from dmoa_p2p.moa._types import (
    DEFAULT_AGGREGATOR,
    DEFAULT_LAYER_TIMEOUT_S,
    DEFAULT_LAYERS,
    DEFAULT_PROPOSERS,
    DEFAULT_STRATEGY,
    MAX_LAYERS,
    MAX_PROPOSERS,
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
from dmoa_p2p.moa.engine import MoaEngine, QueryPlugins
from dmoa_p2p.moa.strategies import Draw, plan_layers, uniform_draw
from dmoa_p2p.moa.trace import Answer, CallRecord, LayerRecord, MissingProposer, Trace

__all__ = [
    "DEFAULT_AGGREGATOR",
    "DEFAULT_LAYERS",
    "DEFAULT_LAYER_TIMEOUT_S",
    "DEFAULT_PROPOSERS",
    "DEFAULT_STRATEGY",
    "MAX_LAYERS",
    "MAX_PROPOSERS",
    "Aggregator",
    "Answer",
    "CallRecord",
    "Composition",
    "Draw",
    "LayerContext",
    "LayerPlan",
    "LayerRecord",
    "MissingProposer",
    "MoaEngine",
    "PeerLoad",
    "Plan",
    "PromptMode",
    "QueryPlugins",
    "QueryRequest",
    "Strategy",
    "TokenBudget",
    "Trace",
    "plan_layers",
    "uniform_draw",
]
