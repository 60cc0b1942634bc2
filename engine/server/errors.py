"""Every error answer has the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.

Schema violations (pydantic, malformed JSON, bad UTF-8) become 400 naming the field before the engine sees
anything; unknown routes 404; anything unexpected 500 with its type, never a dropped connection.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("multiverse.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 503


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def describe_validation(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(message, param) for the most specific pydantic error: 'max_tokens: Input should be greater than ...'.

    A union field reports one error per member; the deepest one names the offending element best.
    """
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    if first.get("type") == "json_invalid":
        where = first.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({where})", None
    param = ".".join(str(x) for x in first.get("loc", ()) if not _is_type_tag(x)) or None
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if param is None and first.get("type") in ("model_attributes_type", "dict_type"):
        return "the request body must be a JSON object", None
    return (f"{param}: {message}" if param else message), param


def _is_type_tag(part: Any) -> bool:
    """Parts of a pydantic location that name a union member or the body, not a field."""
    if isinstance(part, int):
        return False
    return part == "body" or part in _TYPE_NAMES or "[" in part or part[:1].isupper() or part.startswith("function-")


_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none"}


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, err: APIError) -> JSONResponse:
        return error_response(err.status, err.message, err.param, err.code, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(err.errors()))
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException) -> JSONResponse:
        detail = err.detail if isinstance(err.detail, str) else str(err.detail)
        if err.status_code == 400 and "parsing the body" in detail:
            detail = "the request body could not be read as JSON (is it UTF-8?)"
        return error_response(err.status_code, detail)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}: {err}")
