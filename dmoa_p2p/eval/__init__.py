"""`dmoa-p2p eval`: question sets scored by code, configurations compared with honest statistics."""

from dmoa_p2p.eval._checks import CHECK_KINDS, Checker, EvalError, build_check, normalise
from dmoa_p2p.eval._items import (
    BUILT_IN_SETS,
    LEVELS,
    Item,
    arithmetic_items,
    built_in_set,
    load_set,
    read_set,
)

__all__ = [
    "BUILT_IN_SETS",
    "CHECK_KINDS",
    "LEVELS",
    "Checker",
    "EvalError",
    "Item",
    "arithmetic_items",
    "build_check",
    "built_in_set",
    "load_set",
    "normalise",
    "read_set",
]
