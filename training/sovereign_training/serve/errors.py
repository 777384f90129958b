"""OpenAI-shaped errors: every failure answers ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# Longest input value echoed back in a validation message; prompts can be huge.
_MAX_ECHO = 80


class OpenAIError(Exception):
    """An error the API reports to the client with an HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad_param(param: str, message: str, code: str = "invalid_value") -> OpenAIError:
    """A 400 for one request field; the message names the field and what is allowed."""
    return OpenAIError(400, f"{param}: {message}", param=param, code=code)


def _param_from_loc(loc: Sequence[int | str]) -> str | None:
    parts = [p for p in loc if p != "body"]
    # Pydantic puts union member names ("str", "list[int]") into the path; they are noise.
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    if not parts:
        return None
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "function-after", "function-before"})


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """Turn FastAPI's 422 into OpenAI's 400, naming the first offending field."""
    errors = exc.errors()
    if not errors:
        return OpenAIError(400, "invalid request body")
    first = _most_specific(errors)
    kind = str(first.get("type", ""))
    loc = first.get("loc", ())
    param = _param_from_loc(loc)
    if kind == "json_invalid":
        return OpenAIError(400, f"the request body is not valid JSON: {first.get('msg')}")
    if kind == "extra_forbidden":
        return OpenAIError(
            400,
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if kind == "missing":
        if param is None:
            return OpenAIError(400, "the request body must be a JSON object")
        return bad_param(param, "this field is required", code="missing_required_parameter")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if param is None:
        if kind.endswith("_type"):  # the body is JSON, but not an object
            return OpenAIError(400, f"the request body must be a JSON object: {message}")
        return OpenAIError(400, message, code="invalid_value")  # a rule across fields
    value = repr(first.get("input"))
    if len(value) <= _MAX_ECHO and kind != "value_error":
        message = f"{message} (got {value})"
    return bad_param(param, message)


def _most_specific(errors: Sequence[Any]) -> Any:
    """Of the errors about the first bad field, the one that points deepest into it.

    A value that fails a union gets one error per member; the deepest one (say
    ``messages[0].content[0].type``) says more than the first (``content`` is not a string).
    """
    first = errors[0]
    root = _param_from_loc(first.get("loc", ()))
    if root is None:
        return first
    same_field = [e for e in errors if (_param_from_loc(e.get("loc", ())) or "").startswith(root)]
    return max(same_field, key=lambda e: len(_param_from_loc(e.get("loc", ())) or ""))


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response, including FastAPI's own, OpenAI-shaped."""

    async def on_openai_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OpenAIError)
        return JSONResponse(exc.body(), status_code=exc.status_code)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        err = validation_error(exc)
        return JSONResponse(err.body(), status_code=err.status_code)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        body = error_body(str(exc.detail), type_, None, None)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Only a server bug lands here; the traceback goes to the log, not to the client.
        log.exception("unhandled error", exc_info=exc)
        body = error_body("internal server error", "server_error", None, None)
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
