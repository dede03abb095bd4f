"""m8's client (M8Client) over a stand-in server written with httpx's transports.

The client speaks through `m8.client.http` (the standard library's http.client); unit and
attack tests answer with httpx's `MockTransport`, or a transport of their own, through
`via_httpx`.
"""

from __future__ import annotations

import httpx

from m8.client.http import Request, Response, Transport


def via_httpx(transport: httpx.BaseTransport) -> Transport:
    """A client transport that hands each request to `transport` as httpx's."""

    def send(request: Request) -> Response:
        asked = httpx.Request(
            request.method,
            f"http://m8{request.target}",
            headers=request.headers,
            content=request.body,
        )
        answer = transport.handle_request(asked)
        answer.read()
        return Response(
            answer.status_code,
            answer.reason_phrase,
            answer.content,
            {name.lower(): value for name, value in answer.headers.items()},
        )

    return send
