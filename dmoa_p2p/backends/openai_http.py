"""`openai`: a backend that calls any OpenAI-compatible chat server (llama-server, vLLM, ...)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import attrs
import httpx
import trio

from dmoa_p2p.backends._protocol import (
    BackendBusy,
    BackendError,
    ChatMessage,
    Generation,
    GenerationParams,
    TextCallback,
)

log = logging.getLogger(__name__)

# what `model_name` says before the server has been asked which model it serves
UNDISCOVERED_MODEL_NAME = "openai-compatible"
_MAX_MODEL_NAME = 128  # presence and proposal messages carry at most this many characters
_MAX_ERROR_CHARS = 500
_BUSY_STATUSES = frozenset({429, 503})
# the server could not be reached or dropped the connection; a generation has no side
# effects, so sending it again is harmless
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


class OpenAIHttpBackend:
    """A model behind an OpenAI-compatible HTTP API, called through `/chat/completions`.

    The model id is asked of `GET /models` on first use, not at startup, so a node starts
    even while its server is still loading. Unreachable servers are retried with exponential
    backoff; a busy server (429/503) is not: `BackendBusy` lets the queueing layer decide.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        context_length: int = 4096,
        timeout_s: float = 300.0,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise BackendError(f"base_url must start with http:// or https://, got {base_url!r}")
        if context_length < 1 or not timeout_s > 0 or retries < 0 or backoff_s < 0:
            raise BackendError(
                "context_length must be >= 1, timeout_s > 0, retries and backoff_s >= 0; got "
                f"{context_length}, {timeout_s}, {retries} and {backoff_s}"
            )
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._model = model or None
        self._context_length = context_length
        self._discovery = trio.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # connecting is quick or hopeless; answering may take the whole budget
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)

    @property
    def model_name(self) -> str:
        if self._model is None:
            return UNDISCOVERED_MODEL_NAME
        return display_name(self._model)

    @property
    def context_length(self) -> int:
        return self._context_length

    def count_tokens(self, text: str) -> int:
        # an estimate: the OpenAI API has no tokenize call; ~4 characters a token for English
        return max(1, (len(text) + 3) // 4)

    async def resolve_model(self) -> str:
        """The model id sent in requests: the configured one, or the server's first."""
        if self._model is None:
            async with self._discovery:
                if self._model is None:
                    self._model = await self._first_model_id()
        return self._model

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> Generation:
        body = self._body(await self.resolve_model(), messages, params, stream=False)
        response = await self._send("POST", "/chat/completions", body)
        return self._generation(response, messages)

    async def generate_stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, on_text: TextCallback
    ) -> Generation:
        """`generate`, with each piece of the answer passed to `on_text` as the server sends it.

        Streamed answers carry no usage counts, so tokens are estimated like `count_tokens`;
        the finish reason is the server's last one.
        """
        pieces: list[str] = []
        reason = "stop"
        async with contextlib.aclosing(self._events(messages, params)) as events:
            async for delta, finished in events:
                if delta:
                    pieces.append(delta)
                    on_text(delta)
                reason = finished or reason
        text = "".join(pieces)
        prompt_estimate = sum(self.count_tokens(m.content) for m in messages)
        return Generation(text, prompt_estimate, self.count_tokens(text), reason)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        """The answer as text pieces, as the server produces them (server-sent events).

        Iterate it inside `contextlib.aclosing(...)` so that stopping early frees the connection.
        """
        async with contextlib.aclosing(self._events(messages, params)) as events:
            async for delta, _finished in events:
                if delta:
                    yield delta

    async def _events(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[tuple[str, str | None], None]:
        """Each event's text and finish reason (None until the last)."""
        url = self._url("/chat/completions")
        body = self._body(await self.resolve_model(), messages, params, stream=True)
        response = await self._send("POST", "/chat/completions", body, stream=True)
        done = False
        try:
            # read to the end even after [DONE]: httpx's nested body iterators are async
            # generators, and trio warns about any left unexhausted
            async for line in response.aiter_lines():
                if done or not line.startswith("data:"):
                    continue  # blank separators, comments, event names
                data = line[len("data:") :].strip()
                done = data == "[DONE]"
                if not done:
                    yield _stream_delta(data, url)
        except httpx.HTTPError as exc:
            raise BackendError(f"{url} broke off its answer: {_describe(exc)}") from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ---- HTTP --------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, stream: bool = False
    ) -> httpx.Response:
        """One request, retried while the server cannot be reached; raises on HTTP errors."""
        url = self._url(path)
        request = self._client.build_request(method, url, json=body)
        attempt = 0
        while True:
            try:
                response = await self._client.send(request, stream=stream)
            except _RETRYABLE as exc:
                if attempt >= self.retries:
                    raise BackendError(
                        f"cannot reach {url} ({_describe(exc)}) after {attempt + 1} attempts; "
                        "is the server running, and is base_url right?"
                    ) from exc
                delay = self.backoff_s * 2**attempt
                log.info("cannot reach %s (%s); retrying in %.1f s", url, _describe(exc), delay)
                attempt += 1
                await trio.sleep(delay)
                continue
            except httpx.TimeoutException as exc:
                raise BackendError(f"{url} did not answer within {self.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise BackendError(f"request to {url} failed: {_describe(exc)}") from exc
            try:
                if stream and not response.is_success:
                    await response.aread()
                _raise_for_status(response, url)
            except BaseException:
                await response.aclose()
                raise
            return response

    async def _first_model_id(self) -> str:
        url = self._url("/models")
        response = await self._send("GET", "/models")
        try:
            ids = [entry["id"] for entry in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"{url} did not list models the OpenAI way; pass -o model=NAME"
            ) from exc
        if not ids or not isinstance(ids[0], str) or not ids[0]:
            raise BackendError(f"{url} lists no models; pass -o model=NAME")
        log.info("%s serves model %r", self.base_url, ids[0])
        return ids[0]

    # ---- payloads ----------------------------------------------------------------------

    @staticmethod
    def _body(
        model: str, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stream": stream,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _generation(self, response: httpx.Response, messages: Sequence[ChatMessage]) -> Generation:
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            finish_reason = choice.get("finish_reason") or "stop"
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"{response.url} answered in an unexpected shape: {response.text[:200]!r}"
            ) from exc
        if not isinstance(text, str):
            raise BackendError(f"{response.url} answered a non-text message: {text!r:.200}")
        # some servers omit usage: estimate it the way `count_tokens` does
        prompt_estimate = sum(self.count_tokens(m.content) for m in messages)
        return Generation(
            text=text,
            prompt_tokens=usage_count(usage, "prompt_tokens", prompt_estimate),
            completion_tokens=usage_count(usage, "completion_tokens", self.count_tokens(text)),
            finish_reason=str(finish_reason),
        )


def display_name(model_id: str) -> str:
    """How a model id is shown to peers: a file name rather than a path, at most 128 chars."""
    # llama.cpp servers name a model by its file path; peers need not see local directories
    if model_id.startswith(("/", "~", ".")) or "\\" in model_id:
        model_id = model_id.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return model_id[:_MAX_MODEL_NAME] or UNDISCOVERED_MODEL_NAME


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds; None when absent or in the HTTP-date form."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: the queueing layer's own estimate will do
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _raise_for_status(response: httpx.Response, url: str) -> None:
    if response.is_success:
        return
    status = response.status_code
    what = f"{url} answered HTTP {status}: {_server_message(response)}"
    if status in _BUSY_STATUSES:
        raise BackendBusy(what, retry_after_s(response.headers.get("retry-after")))
    if status in (401, 403):
        what += " (pass -o api_key=KEY or set OPENAI_API_KEY)"
    raise BackendError(what)


def _server_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's `error.message`, FastAPI's `detail`, or the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error") or body.get("detail") or body.get("message")
        if isinstance(error, dict):
            error = error.get("message") or error
        if error:
            return str(error)[:_MAX_ERROR_CHARS]
    return response.text.strip()[:_MAX_ERROR_CHARS] or response.reason_phrase


def _stream_delta(data: str, url: str) -> tuple[str, str | None]:
    try:
        chunk = json.loads(data)
        if "error" in chunk:
            raise BackendError(f"{url} failed while answering: {chunk['error']}")
        choices = chunk.get("choices") or [{}]
        content = (choices[0].get("delta") or {}).get("content") or ""
        finished = choices[0].get("finish_reason")
    except (ValueError, TypeError, AttributeError) as exc:
        raise BackendError(f"{url} sent an unexpected event: {data[:200]!r}") from exc
    return str(content), None if finished is None else str(finished)


def usage_count(usage: Any, key: str, estimate: int) -> int:
    """A server's `usage` count under `key`, or `estimate` where it sends none or nonsense."""
    value = usage.get(key) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:  # True is no count
        return estimate
    return value


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@attrs.frozen
class OpenAIOptions:
    """The `openai` backend's options; the API key defaults to $OPENAI_API_KEY."""

    base_url: str = ""
    model: str | None = None  # None: the server's first
    api_key: str | None = attrs.field(default=None, repr=False)
    context_length: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    timeout_s: float = attrs.field(default=300.0, validator=attrs.validators.gt(0.0))
    retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))

    def load(self) -> OpenAIHttpBackend:
        base_url = self.base_url.strip()
        if not base_url:
            raise BackendError(
                "the openai backend needs its server's URL: "
                "pass -o base_url=http://127.0.0.1:8080/v1"
            )
        return OpenAIHttpBackend(
            base_url,
            model=self.model or None,
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or None,
            context_length=self.context_length,
            timeout_s=self.timeout_s,
            retries=self.retries,
        )
