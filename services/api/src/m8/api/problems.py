"""Every error the API answers with, as RFC 9457 problem details, mapped in this one place.

A problem never quotes submitted values: validation errors name the fields, not what was
in them, so a ciphertext (or a value pasted by mistake) is never reflected.
"""

from __future__ import annotations

import email.message
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.routing import Match

from m8.domain import errors as domain
from m8.eventsourcing import ConcurrencyConflict, EventStoreUnavailable
from m8.messaging import RpcError, RpcTimeout

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One invalid field: where it is and what is wrong (never its value)."""

    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """An error the API answers with `status`; `detail` tells the caller what to do."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str, *, token_given: bool = True) -> None:
        # RFC 6750: an error code only when a token was sent and is not valid.
        challenge = (
            'Bearer realm="m8", error="invalid_token"' if token_given else 'Bearer realm="m8"'
        )
        super().__init__(detail, {"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Unavailable(ApiError):
    """Try again later: the answer carries Retry-After (M8_API_RETRY_AFTER_SECONDS)."""

    status = 503
    code = "unavailable"


class TooManyRequests(ApiError):
    """A caller over one of its limits (m8.api.limits); Retry-After says when to come back."""

    status = 429
    code = "too_many_requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after)})


class BadGateway(ApiError):
    status = 502
    code = "bad_gateway"


# What an error code means for the caller, whether the domain raised it here or the key
# rotator answered with it (its RPC errors forward DomainError.code; docs/contracts.md).
# A domain code not listed is a conflict (409); an RPC code not listed, a rotator failure.
_STATUS = {
    "invalid_path": 422,
    "bad_request": 422,
    # A well-formed upload whose key was issued for another store or path: a conflict with
    # the key's state, not malformed input (422 is only for what the document forbids).
    "upload_key_mismatch": 409,
    "unknown_store": 404,
    "unknown_upload": 404,
    "unknown_upload_key": 404,
    "store_exists": 409,
    "store_inactive": 409,
    "no_default_store": 409,
    "default_store_in_use": 409,
    "no_kek": 409,
    "upload_exists": 409,
    "upload_key_used": 409,
    "upload_key_expired": 409,
    "upload_key_destroyed": 409,
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    errors: list[FieldError] | None = None,
) -> JSONResponse:
    """The problem+json response for one error."""
    problem = Problem(
        type=f"urn:m8:problem:{code}",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def install(app: FastAPI, retry_after: int) -> None:
    """Maps every exception the API can meet to its problem response."""

    def answer(
        status: int,
        code: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> JSONResponse:
        if status == 503:  # every "try again" says when
            headers = {"Retry-After": str(retry_after), **(headers or {})}
        return problem_response(status, code, detail, headers, errors)

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return answer(exc.status, exc.code, exc.detail, exc.headers)

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, domain.DomainError)
        return answer(_STATUS.get(exc.code, 409), exc.code, exc.detail)

    async def rpc_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RpcError)
        if isinstance(exc, RpcTimeout):
            detail = "the key rotator did not answer in time; try again shortly"
            return answer(503, "rotator_unavailable", detail)
        if exc.code == "unavailable":
            return answer(503, "rotator_unavailable", exc.detail)
        status = _STATUS.get(exc.code)
        if status is None:
            log.error("key rotator failed", extra={"rpc_code": exc.code})
            return answer(502, "rotator_failed", "the key rotator failed; try again")
        return answer(status, exc.code, exc.detail)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if _only_about_the_body(exc) and not _json_or_no_body(request):
            return answer(
                415, "unsupported_media_type", "send the request body as application/json"
            )
        errors = [_field_error(error) for error in exc.errors()]
        fields = ", ".join(dict.fromkeys(e.field for e in errors))
        return answer(
            422, "validation_error", f"fix these fields of the request: {fields}", errors=errors
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail
        headers = exc.headers
        if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
            detail = "there is no such resource; see the API's OpenAPI document for its endpoints"
        elif exc.status_code == 400:
            detail = "the request body cannot be read as JSON in UTF-8"
        elif exc.status_code == 405:
            allowed = allowed_methods(request)
            detail = f"this endpoint takes {', '.join(allowed)} only"
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        code = HTTPStatus(exc.status_code).name.lower()
        return answer(exc.status_code, code, str(detail), headers)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        return answer(409, "conflict", "the resource changed while this request ran; send it again")

    async def database_error(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return answer(503, "unavailable", "the database is unavailable; try again shortly")

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return answer(500, "internal", "the API failed unexpectedly; it is logged")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(domain.DomainError, domain_error)
    app.add_exception_handler(RpcError, rpc_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ConcurrencyConflict, conflict)
    app.add_exception_handler(EventStoreUnavailable, database_error)
    app.add_exception_handler(Exception, unexpected)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path.

    Starlette's 405 names only the methods of the first route matching the path, and GET
    and POST on one path are two routes here.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _only_about_the_body(exc: RequestValidationError) -> bool:
    """Whether every error is about the body: a 415 must not hide a bad path or query
    parameter, which is answered 422 naming its own field."""
    errors = exc.errors()
    return bool(errors) and all(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors)


def _json_or_no_body(request: Request) -> bool:
    """Whether the request sends no body, or a body FastAPI reads as JSON: of type
    application/json or application/*+json, parameters aside (with its default
    strict_content_type, a body without a content type is not read as JSON)."""
    has_body = request.headers.get("content-length", "0") != "0" or bool(
        request.headers.get("transfer-encoding")
    )
    content_type = request.headers.get("content-type")
    if not has_body:
        return True
    if not content_type:
        return False
    # As fastapi.routing parses it, so that what FastAPI reads as JSON is never a 415.
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _field_error(error: Mapping[str, Any]) -> FieldError:
    # Only `loc` and `msg`: pydantic's `input` and `ctx` may hold what was submitted.
    if error.get("type") == "json_invalid":  # its `loc` is a byte offset, of no use to a person
        return FieldError(field="body", message="is not valid JSON")
    field = ".".join(str(part) for part in error.get("loc", ())) or "request"
    if error.get("type") == "union_tag_invalid":  # its message quotes the submitted tag
        expected = error.get("ctx", {}).get("expected_tags", "")
        return FieldError(field=field, message=f"must be one of {expected}")
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return FieldError(field=field, message=message)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problem responses an operation may give."""
    ref = {"$ref": "#/components/schemas/Problem"}
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": ref}},
        }
        if status in (429, 503):  # every "try again" says when
            response["headers"] = {"Retry-After": _RETRY_AFTER}
        documented[status] = response
    return documented


_RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def add_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Adds the Problem schema, which `responses` refers to, to an OpenAPI document."""
    _, schema = models_json_schema(
        [(Problem, "serialization")], ref_template="#/components/schemas/{model}"
    )
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(schema["$defs"])
    return openapi
