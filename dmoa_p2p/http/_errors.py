"""Errors in the OpenAI API's shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from dmoa_p2p.admission import PromptRefused, whole_seconds

# a refusal's cause as an HTTP status: 429 when the client should slow down (the swarm is
# loaded, or this node's operator capped what it admits), 503 when this node cannot take
# the prompt now (its queue is full, its model cannot answer)
_REFUSAL_STATUS = {"swarm_overloaded": 429, "cap": 429, "queue_full": 503, "model_unavailable": 503}


class ApiError(Exception):
    """A request the API answers with an error status; `response()` is what the client gets."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status, headers=self.headers)


def refused(exc: PromptRefused) -> ApiError:
    """A refused prompt in OpenAI's shape: the code is its cause, and the message, Retry-After
    and retry-after-ms say the same wait (whole seconds, rounded up)."""
    status = _REFUSAL_STATUS[exc.cause]
    return ApiError(
        status,
        str(exc),  # PromptRefused states its wait as `whole_seconds` does
        kind="rate_limit_error" if status == 429 else "server_error",
        code=exc.cause,
        headers=retry_after_headers(exc.retry_after_s),
    )


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (HTTP), and the same in milliseconds as OpenAI's clients
    read it (they prefer retry-after-ms)."""
    whole = whole_seconds(seconds)
    return {"Retry-After": str(whole), "retry-after-ms": str(whole * 1000)}
