"""What an evaluation asks: any OpenAI-compatible chat API, a dmoa-p2p node's or another's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
import httpx

from dmoa_p2p.backends import ChatMessage
from dmoa_p2p.backends.openai_http import usage_count
from dmoa_p2p.eval._checks import EvalError

TIMEOUT_S = 900.0  # a MoA answer on small CPUs takes minutes; a dead server fails sooner


@attrs.frozen
class Reply:
    text: str
    latency_s: float
    inferences: int  # model calls behind the answer (1 for a plain server)
    tokens: int  # prompt + completion tokens of all of them, as the server reported


@attrs.frozen
class TargetInfo:
    base_url: str
    model: str  # the local model's name: the M = 0 baseline
    dmoa_node: bool  # a dmoa-p2p node: MoA configurations and queue lengths are available


class Target:
    """One OpenAI-compatible endpoint (`base_url` ends before `/v1`)."""

    def __init__(self, client: httpx.AsyncClient, info: TargetInfo) -> None:
        self._client = client
        self.info = info

    @classmethod
    async def connect(
        cls, client: httpx.AsyncClient, base_url: str, model: str | None = None
    ) -> Target:
        """Find out what the server is: a dmoa-p2p node answers /health with its peer id
        and model; another server's model is `model` or the first of its /v1/models."""
        base = base_url.rstrip("/").removesuffix("/v1")
        try:
            health = await client.get(f"{base}/health", timeout=10.0)
            data = health.json() if health.status_code == 200 else {}
        except httpx.HTTPError as exc:
            raise EvalError(f"cannot reach {base}: {exc}; is the server running?") from None
        except ValueError:
            data = {}
        if isinstance(data, dict) and isinstance(data.get("peer_id"), str):
            return cls(client, TargetInfo(base, model or str(data["model"]), True))
        if model is None:
            model = await _first_model(client, base)
        return cls(client, TargetInfo(base, model, False))

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        max_tokens: int = 256,
    ) -> Reply:
        """One chat completion; EvalError with the server's own message if it refuses."""
        body: dict[str, Any] = {
            "model": model or self.info.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        if self.info.dmoa_node:
            body["include_trace"] = True
        started = time.monotonic()
        try:
            response = await self._client.post(
                f"{self.info.base_url}/v1/chat/completions", json=body, timeout=TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise EvalError(f"{self.info.base_url} failed: {exc!r}") from None
        latency = time.monotonic() - started
        data = _json(response)
        if response.status_code != 200:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else response.text[:200]
            raise EvalError(f"the server refused ({response.status_code}): {message}")
        try:
            text = str(data["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise EvalError(f"{self.info.base_url} sent no chat completion") from None
        usage = data.get("usage")
        tokens = usage_count(usage, "prompt_tokens", 0) + usage_count(usage, "completion_tokens", 0)
        trace = data.get("trace")
        calls = len(trace["calls"]) if isinstance(trace, dict) and "calls" in trace else 1
        return Reply(text, latency, calls, tokens)

    async def queue_length(self) -> int | None:
        """The node's queue now (a dmoa-p2p node only)."""
        if not self.info.dmoa_node:
            return None
        try:
            response = await self._client.get(f"{self.info.base_url}/health", timeout=5.0)
            return int(response.json()["queue"]["length"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None


async def _first_model(client: httpx.AsyncClient, base: str) -> str:
    try:
        response = await client.get(f"{base}/v1/models", timeout=10.0)
        models = response.json()["data"]
        return str(models[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        raise EvalError(f"{base} lists no model at /v1/models; name one with --model") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None

