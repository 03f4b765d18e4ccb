"""`POST /v1/chat/completions`: a MoA query, answered whole or streamed as server-sent events."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import trio
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from dmoa_p2p.admission import PromptRefused
from dmoa_p2p.http._errors import ApiError, refused
from dmoa_p2p.http._request import ChatRequest
from dmoa_p2p.moa import Answer, QueryRequest
from dmoa_p2p.node import AdmittedPrompt, Node

log = logging.getLogger(__name__)


def admit(node: Node, query: QueryRequest) -> AdmittedPrompt:
    """Admission control; a refusal becomes the API error its cause calls for."""
    try:
        return node.admit(query)
    except PromptRefused as exc:
        raise refused(exc) from exc


async def answer(
    node: Node, admitted: AdmittedPrompt, on_text: Callable[[str], None] | None = None
) -> Answer:
    """The node's answer; a refusal (its model could not answer) becomes an API error."""
    try:
        return await node.answer(admitted, on_text)
    except PromptRefused as exc:
        raise refused(exc) from exc


def usage(answer: Answer) -> dict[str, int]:
    """Tokens of every LLM call the query made (proposals on peers included), summed."""
    prompt = sum(call.prompt_tokens for call in answer.trace.calls)
    completion = sum(call.completion_tokens for call in answer.trace.calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


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
                # "length": cut at max_tokens; "stop": ended by itself or at a stop string
                "finish_reason": answer.finish_reason,
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
            {"index": 0, "delta": {}, "finish_reason": answer.finish_reason}
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
    node: Node, admitted: AdmittedPrompt, chat: ChatRequest, receive: Receive
) -> Response:
    """The whole answer as one JSON body; a client that leaves first cancels the query."""
    completion = Completion(chat)
    answers: list[Answer] = []
    refusals: list[PromptRefused] = []  # raised past the nursery, it would come wrapped
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        try:
            answers.append(await node.answer(admitted))
        except PromptRefused as exc:
            refusals.append(exc)
        nursery.cancel_scope.cancel()
    if refusals:
        raise refused(refusals[0])
    if not answers:  # nobody is there to read it
        return Response(status_code=499)
    return JSONResponse(completion.whole(answers[0]))


class StreamedAnswer(Response):
    """Server-sent events in OpenAI's chunk format, the final aggregation's text as it comes.

    The response begins with the answer's first piece of text (or the query's end), not
    before: a prompt that fails before it has produced any text (its model could not answer)
    gets its error status, JSON body and Retry-After as a whole answer would, so that the
    client can retry. Only a failure after the first piece can come as an error event.

    The query runs beside the writer and hands it text through an unbounded channel (the
    answer is at most max_tokens long), so a slow client never holds up the model; a client
    that leaves cancels the query.
    """

    media_type = "text/event-stream"

    def __init__(self, node: Node, admitted: AdmittedPrompt, chat: ChatRequest) -> None:
        self.node = node
        self.admitted = admitted
        self.completion = Completion(chat)
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.error: ApiError | None = None  # the query's failure, once known
        self.texted = False  # a piece of the answer went into the channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await self._write(scope, receive, send)
            nursery.cancel_scope.cancel()

    async def _write(self, scope: Scope, receive: Receive, send: Send) -> None:
        events_in, events = trio.open_memory_channel[bytes](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run, events_in)
            async with events:
                try:
                    first = await events.receive()
                except trio.EndOfChannel:  # the query failed before any text
                    assert self.error is not None
                    await self.error.response()(scope, receive, send)
                    return
                start = {"type": "http.response.start", "status": 200}
                await send({**start, "headers": self.raw_headers})
                role = self.completion.chunk({"role": "assistant", "content": ""})
                await _body(send, role + first + _waiting(events))
                async for data in events:
                    await _body(send, data + _waiting(events))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _run(self, events: trio.MemorySendChannel[bytes]) -> None:
        completion = self.completion

        def on_text(piece: str) -> None:
            self.texted = True
            # the queue may go on calling after this query was cancelled
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                events.send_nowait(completion.chunk({"content": piece}))

        async with events:
            try:
                result = await answer(self.node, self.admitted, on_text)
            except ApiError as exc:
                self._failed(events, exc)
                return
            except Exception as exc:  # a bug or a broken plugin: the client gets the OpenAI shape
                log.exception("a streamed query failed")
                self._failed(events, ApiError(500, str(exc), kind="server_error"))
                return
            for data in completion.closing_chunks(result):
                events.send_nowait(data)

    def _failed(self, events: trio.MemorySendChannel[bytes], error: ApiError) -> None:
        """Before any text the writer answers with the error itself; after, as an event."""
        self.error = error
        if self.texted:
            events.send_nowait(_event(error.body()))


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
