"""The trace of one MoA query: plan, who proposed what per layer, and what every call cost."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import cattrs

CallRole = Literal["proposer", "aggregator"]


@attrs.frozen
class CallRecord:
    """One LLM inference made for the query."""

    node: str
    layer: int  # 1..M for proposals, M+1 for the final aggregation
    role: CallRole
    queue_wait_s: float
    service_s: float
    prompt_tokens: int
    completion_tokens: int


@attrs.frozen
class MissingProposer:
    node: str
    reason: str  # refused (with why), unreachable, timed out


@attrs.frozen
class LayerRecord:
    layer: int
    mode: str
    asked: tuple[str, ...]
    answered: tuple[str, ...]  # the origin first, then peers in arrival order
    missing: tuple[MissingProposer, ...]
    replacements: tuple[str, ...]  # peers asked instead of ones that refused or were unreachable
    prompt_bytes: int  # size of the task each proposer got
    truncated: tuple[int, ...]  # proposals of the previous layer trimmed to fit the prompt
    elapsed_s: float


@attrs.frozen
class Trace:
    query_id: str
    origin: str
    strategy: str
    aggregator: str
    layers_requested: int
    proposers_requested: int
    notes: tuple[str, ...]
    layers: tuple[LayerRecord, ...]
    calls: tuple[CallRecord, ...]
    final_truncated: tuple[int, ...]
    total_s: float

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _converter.unstructure(self)
        return data


@attrs.frozen
class Answer:
    text: str
    trace: Trace

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.text, "trace": self.trace.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(data["answer"], _converter.structure(data["trace"], Trace))


_converter = cattrs.Converter()
