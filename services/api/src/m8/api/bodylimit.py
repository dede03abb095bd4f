"""Refuses request bodies over a size limit, by Content-Length and as they stream in."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m8.api.problems import problem_response


class BodyTooLarge(HTTPException):
    """Raised while reading a body that grew past the limit (FastAPI passes it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodySizeLimit:
    """413 for a body over `limit` bytes, before the app reads more than that."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            code = "payload_too_large" if status == 413 else "bad_request"
            detail = (
                f"the request body is larger than {self.limit} bytes"
                if status == 413
                else "the Content-Length header is not a number"
            )
            await problem_response(status, code, detail)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)
