"""`POST /v1/chat/completions`: a MoA query, answered whole or streamed as server-sent events."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

import trio
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from dmoa_p2p.admission import AdmissionRefused, Decision
from dmoa_p2p.http._errors import ApiError, retry_after_headers
from dmoa_p2p.http._request import ChatRequest
from dmoa_p2p.moa import Answer, QueryRequest

if TYPE_CHECKING:
    from dmoa_p2p.node import Node

log = logging.getLogger(__name__)


def admit(node: Node, query: QueryRequest) -> Decision:
    """Admission control, refusals as 429 (the swarm is loaded) or 503 (this queue is full)."""
    try:
        return node.admit(query)
    except AdmissionRefused as exc:
        full = node.queue.length >= node.queue.capacity
        raise ApiError(
            503 if full else 429,
            str(exc),
            kind="server_error" if full else "rate_limit_error",
            code="queue_full" if full else "swarm_overloaded",
            headers=retry_after_headers(exc.retry_after_s),
        ) from exc


def usage(answer: Answer) -> dict[str, int]:
    """Tokens of every LLM call the query made (proposals on peers included), summed."""
    prompt = sum(call.prompt_tokens for call in answer.trace.calls)
    completion = sum(call.completion_tokens for call in answer.trace.calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(chat: ChatRequest, answer: Answer) -> str:
    final = [call for call in answer.trace.calls if call.role == "aggregator"]
    cut = final and final[-1].completion_tokens >= chat.query.params.max_tokens
    return "length" if cut else "stop"


def check_answered(answer: Answer) -> None:
    """An empty answer with no aggregation is the local model failing: 503, with the notes."""
    if answer.text or any(call.role == "aggregator" for call in answer.trace.calls):
        return
    raise ApiError(
        503,
        "the node's model could not answer: " + "; ".join(answer.trace.notes),
        kind="server_error",
        code="model_unavailable",
        headers=retry_after_headers(1.0),
    )


class Completion:
    """The ids and fields every response and chunk of one completion share."""

    def __init__(self, chat: ChatRequest) -> None:
        self.chat = chat
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.chat.model}

    def whole(self, answer: Answer) -> dict[str, Any]:
        body = self._head("chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": finish_reason(self.chat, answer),
            }
        ]
        body["usage"] = usage(answer)
        if self.chat.include_trace:
            body["trace"] = answer.trace.to_json()
        return body

    def chunk(self, delta: dict[str, Any], reason: str | None = None) -> bytes:
        body = self._head("chat.completion.chunk")
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason}]
        return _event(body)

    def closing_chunks(self, answer: Answer) -> list[bytes]:
        last = self._head("chat.completion.chunk")
        last["choices"] = [
            {"index": 0, "delta": {}, "finish_reason": finish_reason(self.chat, answer)}
        ]
        if self.chat.include_trace:
            last["trace"] = answer.trace.to_json()
        chunks = [_event(last)]
        if self.chat.include_usage:  # OpenAI's form: one more chunk, no choices
            extra = self._head("chat.completion.chunk")
            extra["choices"] = []
            extra["usage"] = usage(answer)
            chunks.append(_event(extra))
        return chunks


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def answer_whole(
    node: Node, decision: Decision, chat: ChatRequest, receive: Receive
) -> Response:
    """The whole answer as one JSON body; a client that leaves first cancels the query."""
    completion = Completion(chat)
    answers: list[Answer] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        answers.append(await node.answer(decision))
        nursery.cancel_scope.cancel()
    if not answers:  # nobody is there to read it
        return Response(status_code=499)
    check_answered(answers[0])
    return JSONResponse(completion.whole(answers[0]))


class StreamedAnswer(Response):
    """Server-sent events in OpenAI's chunk format, the final aggregation's text as it comes.

    The query runs beside the writer and hands it text through an unbounded channel (the
    answer is at most max_tokens long), so a slow client never holds up the model; a client
    that leaves cancels the query.
    """

    media_type = "text/event-stream"

    def __init__(self, node: Node, decision: Decision, chat: ChatRequest) -> None:
        self.node = node
        self.decision = decision
        self.completion = Completion(chat)
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await self._write(send)
            nursery.cancel_scope.cancel()

    async def _write(self, send: Send) -> None:
        events_in, events = trio.open_memory_channel[bytes](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run, events_in)
            await _body(send, self.completion.chunk({"role": "assistant", "content": ""}))
            async with events:
                async for data in events:
                    await _body(send, data + _waiting(events))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _run(self, events: trio.MemorySendChannel[bytes]) -> None:
        completion = self.completion

        def on_text(piece: str) -> None:
            # the queue may go on calling after this query was cancelled
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                events.send_nowait(completion.chunk({"content": piece}))

        async with events:
            try:
                answer = await self.node.answer(self.decision, on_text)
                check_answered(answer)
            except ApiError as exc:
                events.send_nowait(_event(exc.body()))
                return
            except Exception as exc:  # headers are sent: the error goes in the stream
                log.exception("a streamed query failed")
                events.send_nowait(_event(ApiError(500, str(exc), kind="server_error").body()))
                return
            for data in completion.closing_chunks(answer):
                events.send_nowait(data)


def _waiting(events: trio.MemoryReceiveChannel[bytes]) -> bytes:
    """Events queued while the last write went out, to send in one go (a slow client)."""
    data = b""
    while True:
        try:
            data += events.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return data


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
