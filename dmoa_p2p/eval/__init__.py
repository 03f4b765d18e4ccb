"""`dmoa-p2p eval`: question sets scored by code, configurations compared with honest statistics."""

from dmoa_p2p.eval._checks import CHECK_KINDS, Checker, EvalError, build_check, normalise
from dmoa_p2p.eval._configs import (
    BASELINE,
    Configuration,
    default_grid,
    parse_configuration,
    parse_configurations,
)
from dmoa_p2p.eval._items import (
    BUILT_IN_SETS,
    LEVELS,
    Item,
    arithmetic_items,
    built_in_set,
    load_set,
    read_set,
)
from dmoa_p2p.eval._plot import plot_rows
from dmoa_p2p.eval._report import ALL_SETS, Row, summarise, write_alpaca_outputs
from dmoa_p2p.eval._results import Outcome, QueueSample, ResultsFile
from dmoa_p2p.eval._run import EvalSettings, answer, run_eval
from dmoa_p2p.eval._stats import (
    PairedComparison,
    accuracy_interval,
    compare_paired,
    mcnemar_p,
    sign_flip_p,
    wilson_interval,
)
from dmoa_p2p.eval._target import Reply, Target, TargetInfo

__all__ = [
    "ALL_SETS",
    "BASELINE",
    "BUILT_IN_SETS",
    "CHECK_KINDS",
    "LEVELS",
    "Checker",
    "Configuration",
    "EvalError",
    "EvalSettings",
    "Item",
    "Outcome",
    "PairedComparison",
    "QueueSample",
    "Reply",
    "ResultsFile",
    "Row",
    "Target",
    "TargetInfo",
    "accuracy_interval",
    "answer",
    "arithmetic_items",
    "build_check",
    "built_in_set",
    "compare_paired",
    "default_grid",
    "load_set",
    "mcnemar_p",
    "normalise",
    "parse_configuration",
    "parse_configurations",
    "plot_rows",
    "read_set",
    "run_eval",
    "sign_flip_p",
    "summarise",
    "wilson_interval",
    "write_alpaca_outputs",
]
