"""API errors: one JSON shape `{"error": {"code": ..., "message": ...}}` with stable codes."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from keytrail.console.api.runtime import PipelineBusy
from keytrail.keystore.errors import (
    InvalidKeyRequest,
    KeyNotFound,
    KeyStateConflict,
    KeyStoreBusy,
    KeyStoreError,
    PermissionDenied,
)
from keytrail.sql.backends import ClickHouseError
from keytrail.sql.queries import QueryError, UnknownQuery

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[KeyStoreError], int] = {
    KeyNotFound: 404,
    PermissionDenied: 403,
    InvalidKeyRequest: 400,
    KeyStateConflict: 409,
    KeyStoreBusy: 503,
}


class ApiError(Exception):
    """An error raised by the API layer itself (authentication, limits, unknown resources)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The one error shape every endpoint returns."""
    return {"error": {"code": code, "message": message}}


def _status_of(exc: KeyStoreError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors()[:10]:
        location = ".".join(str(p) for p in item.get("loc", ())) or "request"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map typed errors to JSON responses; never echo request input (it may hold a secret)."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(KeyStoreError)
    async def _keystore_error(_request: Request, exc: KeyStoreError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_seconds)} if isinstance(exc, KeyStoreBusy) else None
        return JSONResponse(error_body(exc.code, exc.message), status_code=_status_of(exc), headers=headers)

    @app.exception_handler(PipelineBusy)
    async def _pipeline_busy(_request: Request, exc: PipelineBusy) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, str(exc)), status_code=503, headers={"Retry-After": str(exc.retry_after_seconds)}
        )

    @app.exception_handler(UnknownQuery)
    async def _unknown_query(_request: Request, exc: UnknownQuery) -> JSONResponse:
        return JSONResponse(error_body("unknown_query", str(exc)), status_code=404)

    @app.exception_handler(QueryError)
    async def _query_error(_request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse(error_body("invalid_parameter", str(exc)), status_code=400)

    @app.exception_handler(ClickHouseError)
    async def _storage(_request: Request, exc: ClickHouseError) -> JSONResponse:
        log.error("analytics query failed: %s", str(exc).splitlines()[0][:500])
        return JSONResponse(
            error_body("query_failed", "the analytics store could not answer this query; see the server log"),
            status_code=500,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", _describe_validation(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
