"""Every refusal as JSON ``{"error": "one line"}``: the one table from vtok's errors to HTTP
statuses, the service's own refusals, and the exception handlers that answer them.

vtok's errors (vtok.errors) know nothing of HTTP: `VTOK_STATUS` gives each its status here,
found along the error's class hierarchy, so that a subclass answers as its nearest listed base.
Two kinds of error carry their own status because the service itself decides it: `ApiError`
(a refusal made by a route: no body, unknown model, an option out of range) and
`work.ImageRefused` (an upload refused for what it is: 413 too many pixels, 415 not an image,
422 corrupt). `Busy` (the gate: 429, 503) comes with Retry-After.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ConfigError,
    FormatError,
    ImageError,
    LimitError,
    ModelLoadError,
    OptionalDependencyError,
    TokenError,
    VtokError,
)
from .limits import Busy
from .work import ImageRefused

__all__ = ["ApiError", "VTOK_STATUS", "vtok_status", "add_error_handlers", "validation_message"]

# vtok's errors -> the status that answers them. A LimitError that reaches this table (tiles or
# pixels past a limit vtok itself sets) is 422; the server's own pixel cap on uploads and .vtok
# files answers 413 through ImageRefused.
VTOK_STATUS: dict[type[VtokError], int] = {
    ImageError: 422,
    TokenError: 422,
    ConfigError: 422,
    FormatError: 422,
    LimitError: 422,
    ModelLoadError: 404,
    OptionalDependencyError: 501,
    VtokError: 422,  # the rest of the family
}


class ApiError(Exception):
    """A refusal with its status and one line for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def vtok_status(e: VtokError) -> int:
    """The status of a vtok error: an upload's own (ImageRefused), else the table's entry for
    the nearest class of its hierarchy."""
    if isinstance(e, ImageRefused):
        return e.status
    return next(VTOK_STATUS[kind] for kind in type(e).__mro__ if kind in VTOK_STATUS)


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_response(status: int, message: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def validation_message(errors: Sequence[Any]) -> str:
    """Pydantic's first complaint as 'field: what is wrong'."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path"))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))


async def _api_error(request: Request, e: ApiError) -> JSONResponse:
    return error_response(e.status, e.message, e.headers)


async def _busy(request: Request, e: Busy) -> JSONResponse:
    return error_response(e.status, e.message, {"Retry-After": str(e.retry_after_s)})


async def _vtok_error(request: Request, e: VtokError) -> JSONResponse:
    return error_response(vtok_status(e), e)


async def _invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
    return error_response(422, validation_message(e.errors()))


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    message = f"no such page: {request.method} {request.url.path}" if e.status_code == 404 else e.detail
    return error_response(e.status_code, message, getattr(e, "headers", None))


async def _bug(request: Request, e: Exception) -> JSONResponse:  # the server logs the traceback too
    return error_response(500, f"internal error in vtok serve, a bug: {type(e).__name__}")


def add_error_handlers(app: FastAPI) -> None:
    """Every exception a route can raise -> its JSON answer; anything unforeseen is a 500."""
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(Busy)(_busy)
    app.exception_handler(VtokError)(_vtok_error)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_bug)
