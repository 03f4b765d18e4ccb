"""What a query reports to its asker while it runs: layers started, proposals in, final step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs


@attrs.frozen
class LayerStarted:
    """Layer `layer` of `layers` went out: `expected` proposals (this node's and its peers')."""

    kind: ClassVar[str] = "layer_started"
    layer: int
    layers: int
    expected: int


@attrs.frozen
class ProposalReceived:
    """A proposal of layer `layer` arrived from `node`: `answered` of `expected` so far."""

    kind: ClassVar[str] = "proposal"
    layer: int
    layers: int
    node: str
    answered: int
    expected: int


@attrs.frozen
class LayerDone:
    """Layer `layer` ended with `answered` of `expected` proposals; `missing` gave none."""

    kind: ClassVar[str] = "layer_done"
    layer: int
    layers: int
    answered: int
    expected: int
    missing: int


@attrs.frozen
class FinalStarted:
    """The final step began over `proposals` proposals (0: the local model answers alone);
    `note` says why the plan changed, e.g. no peers are known."""

    kind: ClassVar[str] = "final"
    proposals: int
    note: str = ""


Progress = LayerStarted | ProposalReceived | LayerDone | FinalStarted
ProgressCallback = Callable[[Progress], None]
_KINDS: dict[str, type[Progress]] = {
    cls.kind: cls for cls in (LayerStarted, ProposalReceived, LayerDone, FinalStarted)
}


def progress_to_json(event: Progress) -> dict[str, Any]:
    """`{"event": kind, ...fields}`: one line of the control socket's stream."""
    return {"event": event.kind, **attrs.asdict(event)}


def progress_from_json(data: dict[str, Any]) -> Progress:
    """The event `progress_to_json` wrote; ValueError for an unknown kind or wrong fields."""
    fields = dict(data)
    cls = _KINDS.get(fields.pop("event", None))
    if cls is None:
        raise ValueError(f"unknown progress event {data.get('event')!r}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad {cls.kind} event: {exc}") from exc
