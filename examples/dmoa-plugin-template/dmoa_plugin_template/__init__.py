"""Template dmoa-p2p plugin: one small example of each plugin kind, to copy."""

from dmoa_plugin_template.admission import BudgetAdmission
from dmoa_plugin_template.aggregator import ShortestAggregator
from dmoa_plugin_template.backend import EchoBackend, EchoOptions
from dmoa_plugin_template.gossip import CountingGossip
from dmoa_plugin_template.strategy import FirstPeersStrategy

__all__ = [
    "BudgetAdmission",
    "CountingGossip",
    "EchoBackend",
    "EchoOptions",
    "FirstPeersStrategy",
    "ShortestAggregator",
]
