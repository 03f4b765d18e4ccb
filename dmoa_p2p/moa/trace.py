"""The trace of one MoA query: plan, who proposed what per layer, and what every call cost."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import cattrs

CallRole = Literal["proposer", "aggregator"]
FinishReason = Literal["stop", "length"]
FINAL = "final"  # the final aggregation's layer in JSON traces


@attrs.frozen
class CallRecord:
    """One LLM inference made for the query."""

    node: str
    # 1..M for proposals; M+1 for the final aggregation (so layers sort), "final" in JSON
    layer: int
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
        """The trace as JSON; the final aggregation's call has the layer "final"."""
        data: dict[str, Any] = _converter.unstructure(self)
        for call in data["calls"]:
            if call["role"] == "aggregator":
                call["layer"] = FINAL
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        """The trace `to_json` wrote; "final" is layer M+1 again."""
        final = len(data["layers"]) + 1
        calls = [
            {**call, "layer": final} if call["layer"] == FINAL else call for call in data["calls"]
        ]
        return _converter.structure({**data, "calls": calls}, cls)


@attrs.frozen
class Answer:
    text: str
    trace: Trace
    # the final step's: "length" when the answer was cut at max_tokens
    finish_reason: FinishReason = "stop"

    @property
    def truncated(self) -> bool:
        """True when the answer was cut at max_tokens (or the model's context)."""
        return self.finish_reason == "length"

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "finish_reason": self.finish_reason,
            "truncated": self.truncated,
            "trace": self.trace.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        reason: FinishReason = "length" if data.get("finish_reason") == "length" else "stop"
        return cls(data["answer"], Trace.from_json(data["trace"]), reason)


_converter = cattrs.Converter()
