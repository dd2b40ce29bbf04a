"""One error shape for every 4xx and 5xx: ``{"error": {"code", "message", "detail"}}``.

Library exceptions are mapped to status codes here, so routes just call the library and
let its typed errors propagate.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from semstore.storage import ConnectionLostError

logger = logging.getLogger("semstore.server")

_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    """What went wrong: a stable machine ``code``, a human ``message`` and optional ``detail``."""

    code: str = Field(examples=["collection_not_found"])
    message: str
    detail: Any = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


class ApiError(StarletteHTTPException):
    """An error answered with the common shape; raise it from routes and dependencies."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.error_detail = detail


#: Longest error message sent (an exception may quote a huge input).
MAX_MESSAGE_CHARS = 1000
#: Most validation problems listed in an error's detail.
MAX_PROBLEMS = 20


def safe_text(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as a string that always encodes to UTF-8 (lone surrogates escaped), cut to ``limit``."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def error_payload(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The JSON document of an error response."""
    return {"error": {"code": code, "message": safe_text(message), "detail": detail}}


def error_response(status_code: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """A ready error response (for middleware, which runs outside the exception handlers)."""
    return JSONResponse(error_payload(code, message, detail), status_code=status_code, headers=headers)


def _library_errors() -> list[tuple[type[BaseException], int, str]]:
    """``(exception class, status, code)`` for the library's typed errors."""
    from semstore.collection import QueryError, SourceUnavailableError
    from semstore.encoders import EncoderError, ModelNotAllowedError
    from semstore.ingest import BadImageError, IngestError
    from semstore.ingest.roots import PathNotAllowedError
    from semstore.names import InvalidNameError, UnsafePathError
    from semstore.conditions import InvalidFilterError
    from semstore.validation import InvalidMetadataError, InvalidTextError
    from semstore.storage import (
        ApiKeyExistsError,
        CodecNotFoundError,
        CollectionExistsError,
        CollectionNotFoundError,
        ItemNotFoundError,
    )
    from semstore.transfer import TransferError

    return [
        (CollectionNotFoundError, 404, "collection_not_found"),
        (ItemNotFoundError, 404, "item_not_found"),
        (CodecNotFoundError, 404, "codec_not_found"),
        (SourceUnavailableError, 404, "source_unavailable"),
        (CollectionExistsError, 409, "collection_exists"),
        (ApiKeyExistsError, 409, "api_key_exists"),
        (QueryError, 400, "bad_query"),
        (PathNotAllowedError, 400, "path_not_allowed"),
        (TransferError, 400, "bad_archive"),
        (BadImageError, 422, "bad_image"),
        (IngestError, 422, "ingest_failed"),
        (EncoderError, 422, "model_unavailable"),
        (ModelNotAllowedError, 422, "model_not_allowed"),
        (InvalidNameError, 422, "invalid_name"),
        (UnsafePathError, 422, "invalid_name"),
        (InvalidMetadataError, 422, "invalid_metadata"),
        (InvalidFilterError, 422, "invalid_filter"),
        (InvalidTextError, 422, "invalid_text"),
        (DataError, 422, "invalid_data"),
        # Fallbacks: any other library ValueError / LookupError is a problem with the request
        # (the most specific class registered wins, so the ones above keep their codes).
        (ValueError, 400, "bad_request"),
        (LookupError, 404, "not_found"),
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, from routing to validation to library exceptions, use the common shape."""

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, ApiError):
            return error_response(exc.status_code, exc.code, exc.message, exc.error_detail, exc.headers)
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, None, exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        problems = [
            {
                "loc": [safe_text(part, 64) for part in list(error.get("loc", ()))[:8]],
                "msg": safe_text(error.get("msg", ""), 300),
                "type": safe_text(error.get("type", ""), 64),
            }
            for error in errors[:MAX_PROBLEMS]
        ]
        summary = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems[:5])
        if len(errors) > MAX_PROBLEMS:
            summary += f" ({len(errors)} problems, {MAX_PROBLEMS} listed)"
        return error_response(422, "validation_error", f"invalid request: {summary}", problems)

    def library_error(status_code: int, code: str):  # noqa: ANN202 - a handler factory
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            if type(exc) in (ValueError, LookupError, KeyError, IndexError) or isinstance(exc, DataError):
                # Untyped errors are mapped to a 4xx but logged (one line): a bug would show here.
                logger.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, safe_text(exc, 300))
            message = str(getattr(exc, "orig", None) or exc) if isinstance(exc, DataError) else str(exc)
            return error_response(status_code, code, " ".join((message or type(exc).__name__).split()))

        return handler

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "unavailable", "the database is unavailable or busy; retry later")

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for exc_class, status_code, code in _library_errors():
        app.add_exception_handler(exc_class, library_error(status_code, code))
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(ConnectionLostError, database_unavailable)
    app.add_exception_handler(Exception, unexpected_error)


#: Error responses documented on every API route (the OpenAPI schema lists what may come back).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Bad request",
        401: "Missing, malformed, unknown or revoked API key",
        403: "The API key's scope does not allow this",
        404: "Not found",
        409: "Conflict",
        413: "Request body or image count too large",
        422: "Invalid request or unprocessable image",
        429: "Rate limit exceeded (see Retry-After)",
        500: "Internal error",
        503: "Database unavailable or busy, or the ingest worker process stopped during the request",
    }.items()
}
