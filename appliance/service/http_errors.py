"""Errors as JSON in each API's own shape (Ollama: ``error`` string; OpenAI: ``error.message``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.errors import ApplianceError

__all__ = ["HttpError", "error_body", "error_response"]


def _is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def error_body(err: ApplianceError, *, openai: bool) -> dict[str, Any]:
    """Ollama clients read ``error`` as a string; OpenAI clients read ``error.message``."""
    if openai:
        inner: dict[str, Any] = {"message": err.message, "type": err.code, "code": err.code, "param": None}
        if err.hint:
            inner["hint"] = err.hint
        return {"error": inner}
    return err.to_dict()


def error_response(
    err: ApplianceError, request: web.Request, *, retry_after: int | None = None
) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after and err.http_status == 503 else None
    return web.json_response(
        error_body(err, openai=_is_openai(request.path)), status=err.http_status, headers=headers
    )


class HttpError(ApplianceError):
    """An HTTP-level refusal (404, 405, 413, 401) in the same JSON shape as every other error."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.http_status = status
        self.code = code
