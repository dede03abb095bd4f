"""A small synchronous client of m8's HTTP API (DESIGN section 5)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from m8.client.errors import ApiError, ClientError, Unreachable
from m8.client.http import (
    Connection,
    ConnectionSettingError,
    Request,
    Transport,
    TransportError,
)

Json = dict[str, Any]
# Seconds before each new try of an upload the API answered 409 `conflict` (each pause
# jittered down to as little as half, so that racing twins spread out): five tries within
# 3 s of pauses, then the conflict is reported.
CONFLICT_BACKOFF = (0.2, 0.4, 0.8, 1.6)


class M8Client:
    """One API server, one bearer token, one connection: threads that share a client
    take turns (a long-poll included); give each its own to upload in parallel."""

    def __init__(
        self,
        server: str,
        token: str,
        timeout: float = 30.0,
        transport: Transport | None = None,  # tests: a stand-in server
        sleep: Callable[[float], None] = time.sleep,  # tests: a clock of their own
    ) -> None:
        self.server = server.rstrip("/")
        self._sleep = sleep
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "m8ctl"}
        if not token or not all("!" <= c <= "~" for c in token):
            # Never quoted: it is a credential.
            raise ClientError(
                "the token is empty or has characters a bearer token cannot have (spaces, "
                "line breaks, non-ASCII); check the token or its file"
            )
        if transport is None:
            try:
                transport = Connection(self.server)
            except ConnectionSettingError as exc:
                raise ClientError(str(exc)) from None
        self._transport = transport

    def close(self) -> None:
        """Closes the connection."""
        if isinstance(self._transport, Connection):
            self._transport.close()

    def __enter__(self) -> M8Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        url: str,
        json_body: Json | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        headers = dict(self._headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":"), allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        target = f"{url}?{urlencode(params)}" if params else url
        request = Request(method, target, headers, body, timeout or self._timeout)
        try:
            response = self._transport(request)
        except TransportError as exc:
            raise Unreachable(
                f"cannot reach the m8 API at {self.server} ({exc}); "
                "check the URL and that the server runs"
            ) from None
        if 200 <= response.status < 300:
            try:
                return json.loads(response.body) if response.body else {}
            except ValueError:
                raise ClientError(
                    f"the m8 API at {self.server} answered {method} {url} with something that "
                    "is not JSON; check the URL, and tell your operator if it persists"
                ) from None
        try:
            problem = json.loads(response.body)
            title = str(problem.get("title") or response.reason)
            detail = str(problem.get("detail") or "")
            code = str(problem.get("type") or "").removeprefix("urn:m8:problem:")
        except (ValueError, AttributeError):
            title, detail, code = response.reason, "", ""
        retry_after = _seconds(response.headers.get("retry-after"))
        raise ApiError(response.status, title, detail, code, retry_after)

    # --- keys -----------------------------------------------------------------------

    def rotator_keys(self) -> Json:
        """The rotator's published verify keys and the ids it withdrew: {keys, withdrawn}."""
        result: Json = self._call("GET", "/v1/keys/rotator")
        return result

    def receipt_keys(self) -> Json:
        """The reactors' published receipt verify keys: {keys}."""
        result: Json = self._call("GET", "/v1/keys/receipts")
        return result

    def upload_key(self, path: str, store: str) -> Json:
        """A signed one-time upload key for `path` in `store` (always named: never the
        server's choice)."""
        result: Json = self._call(
            "POST", "/v1/upload-keys", json_body={"store": store, "path": path}
        )
        return result

    # --- uploads --------------------------------------------------------------------

    def submit(self, body: Json) -> Json:
        """Sends an encrypted upload (202: pending).

        A 409 `conflict` (uploads racing to one path: the API's transaction lost, and
        changed nothing) is sent again as it was, with a bounded backoff. The same request
        is safe to repeat and needs no new key: the API claims the key and records the
        upload id in one transaction, so a conflicting try left the key unused, and it
        answers the exact repetition of an accepted upload as it answered the first.
        Any other refusal (a used or expired key among them) is not retried.
        """
        for pause in CONFLICT_BACKOFF:
            try:
                return self._post_upload(body)
            except ApiError as exc:
                if exc.status != 409 or exc.code != "conflict":
                    raise
            self._sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311  # jitter, not crypto
        return self._post_upload(body)

    def _post_upload(self, body: Json) -> Json:
        result: Json = self._call("POST", "/v1/secrets", json_body=body)
        return result

    def upload(self, upload_id: str, wait: float = 0) -> Json:
        """An upload's status; with `wait`, the server holds the answer until it is final.

        The answer is an object with a string `status`, or a ClientError says it is not.
        """
        params = {"wait": f"{wait:g}"} if wait else None
        result = self._call(
            "GET", f"/v1/uploads/{quote(upload_id, safe='')}", params=params, timeout=wait + 30.0
        )
        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            raise ClientError(
                f"the m8 API at {self.server} answered about upload {upload_id} with no "
                'status (expected a JSON object with a string "status"). Ask again later '
                f"with `m8ctl upload status {upload_id}`; if this persists, tell your operator."
            )
        return result

    # --- secrets --------------------------------------------------------------------

    def secrets(self, store: str | None = None, prefix: str | None = None) -> Json:
        """Every secret m8 has stored (fingerprints, never values), all pages."""
        params = {k: v for k, v in {"store": store, "prefix": prefix}.items() if v}
        items: list[Json] = []
        while True:
            page: Json = self._call("GET", "/v1/secrets", params=params)
            items += page.get("secrets", [])
            if not page.get("next_after"):
                return {"secrets": items}
            params["after"] = page["next_after"]

    def secret(self, store: str, path: str) -> Json:
        """One secret's current fingerprint and upstream version."""
        result: Json = self._call("GET", f"/v1/secrets/{_seg(store)}/{quote(path)}")
        return result

    def history(self, store: str, path: str) -> Json:
        """Every upload to one secret: who, when, outcome, fingerprint."""
        result: Json = self._call("GET", f"/v1/history/{_seg(store)}/{quote(path)}")
        return result

    # --- the caller -----------------------------------------------------------------

    def me(self) -> Json:
        """Who the token is: subject, roles, the stores and path prefixes it may use."""
        result: Json = self._call("GET", "/v1/me")
        return result

    # --- stores ---------------------------------------------------------------------

    def stores(self) -> Json:
        """The stores this user may target, and the default."""
        result: Json = self._call("GET", "/v1/stores")
        return result

    def add_store(self, body: Json) -> Json:
        """Registers a store (admin)."""
        result: Json = self._call("POST", "/v1/stores", json_body=body)
        return result

    def store_action(self, name: str, action: str) -> Json:
        """activate | deactivate | default (admin)."""
        result: Json = self._call("POST", f"/v1/stores/{_seg(name)}/{action}")
        return result


def _seg(text: str) -> str:
    return quote(text, safe="")


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds; m8's API sends delta-seconds, an HTTP date counts as none."""
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
