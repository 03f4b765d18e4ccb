"""Reading the exception groups that trio's nurseries wrap errors in: leaves, cancellation."""

from __future__ import annotations

import trio


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc`, however deeply grouped; `[exc]` for a plain exception."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def only_cancelled(exc: BaseException) -> bool:
    """True when `exc` is trio.Cancelled, alone or as every leaf of an exception group."""
    return all(isinstance(leaf, trio.Cancelled) for leaf in leaves(exc))
