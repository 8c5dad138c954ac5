"""Errors in OpenAI's shape, for the routes that speak OpenAI's APIs.

OpenAI's REST answers and its Realtime ``error`` events carry the same object,
``{"message", "type", "param", "code"}``: a REST answer is
``{"error": {...}}`` with an HTTP status (`OpenAIError.response`); a Realtime error
event puts the object under ``error`` beside the client's ``event_id``
(`realtime_events.error_event`). Clients (the SDKs) read ``type`` and ``code``, so
the names below are OpenAI's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

# The kinds of error (``type``).
INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
RATE_LIMIT = "rate_limit_error"
SERVICE_UNAVAILABLE = "service_unavailable_error"

# The codes this server gives (``code``).
INVALID_API_KEY = "invalid_api_key"
INVALID_JSON = "invalid_json"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
UNSUPPORTED_VALUE = "unsupported_value"
MODEL_NOT_FOUND = "model_not_found"
FILE_TOO_LARGE = "file_too_large"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
SERVER_IS_OVERLOADED = "server_is_overloaded"


class OpenAIError(Exception):
    """An error a client is told in OpenAI's shape. *status* and *headers* are those of
    a REST answer (a Realtime error event has neither)."""

    def __init__(
        self,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.status = status
        self.headers = dict(headers or {})

    def error(self) -> dict[str, Any]:
        """The error object: ``{"message", "type", "param", "code"}``."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> dict[str, Any]:
        """A REST answer's body: ``{"error": {...}}``."""
        return {"error": self.error()}

    def response(self) -> Response:
        return JSONResponse(self.body(), self.status, headers=self.headers or None)


def invalid_api_key() -> OpenAIError:
    """The 401 of a request without the server's token, as OpenAI answers a bad key."""
    return OpenAIError(
        "A valid token is required: send it as `Authorization: Bearer <token>` "
        "(the API key of OpenAI's clients) or as ?token=.",
        code=INVALID_API_KEY,
        status=401,
        headers={"WWW-Authenticate": "Bearer"},
    )
