"""API errors, translated once at the edge into ``{"error": {"code", "message", "details"}}``.

Bad input is a 4xx naming the field; a missing thing is a 404; an unreachable RPC during
verification is a 503 with Retry-After. Nothing a client sends produces a 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def not_found(what: str, **ids: Any) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found", {"what": what, **ids})


def bad_field(field: str, problem: str, location: str = "query") -> ApiError:
    return ApiError(
        422,
        "invalid_input",
        f"{field}: {problem}",
        {"field": field, "location": location, "problem": problem},
    )


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(body(e.code, e.message, e.details), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {"loc": ["request"], "msg": "invalid"}
        loc = [str(x) for x in first.get("loc", [])]
        where = loc[0] if loc else "request"
        field = ".".join(loc[1:]) or where
        msg = str(first.get("msg", "invalid"))
        return JSONResponse(
            body(
                "invalid_input",
                f"{field}: {msg}",
                {
                    "field": field,
                    "location": where,
                    "problem": msg,
                    "errors": [
                        {
                            "field": ".".join(str(x) for x in er.get("loc", [])[1:]),
                            "problem": str(er.get("msg")),
                        }
                        for er in errs
                    ],
                },
            ),
            422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            e.status_code, "http_error"
        )
        return JSONResponse(
            body(code, str(e.detail)), e.status_code, headers=getattr(e, "headers", None)
        )


ERRORS_422_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown chain or resource"},
    422: {"model": ErrorResponse, "description": "Malformed input; `details.field` names it"},
}
