"""Whether an upload's outcome is vouched for by the reactor that did the work.

The API only relays outcomes. A reactor signs each one (contracts: outcome receipts) with
a receipt key m8ctl pinned at login, over the upload id, store, path, status, upstream
version, fingerprint and the SHA-256 of the ciphertext it worked on; m8ctl checks that
signature against the upload id, store, path and ciphertext hash it chose and sent itself,
so an API cannot claim "stored", alter a fingerprint, replay another upload's receipt, or
swap the ciphertext for one of its own.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from m8.client.errors import ApiError
from m8.client.keys import refresh_keys, report, utc_now
from m8.client.pins import retire_predecessors, trusted
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.crypto import CryptoError, OutcomeReceipt, verify_receipt

LONG_POLL = 20.0  # seconds the server holds one status request
# A person watching the stage at a terminal: the first request short, so that the first
# stage shows at once (an upload that settles sooner is answered then, with no stage
# read); then 2 s, doubled while the stage stays the same, up to 10 s, and 2 s again once
# it moves: a backlog does not get busier for people watching it. Programs keep
# LONG_POLL: a request per 20 s, or one if it settles sooner. The outcome never waits for
# a poll: the server answers a request as soon as the upload settles.
STAGE_FIRST_POLL = 0.5
STAGE_POLL = 2.0
STAGE_POLL_MAX = 10.0
RETRY_AFTER_DEFAULT = 1.0  # a 429 without a usable Retry-After


class StagePolls:
    """How long each status request may wait while a person watches the stage (a poll
    for `await_outcome`): STAGE_FIRST_POLL, then STAGE_POLL, twice as long each time the
    stage is unchanged up to STAGE_POLL_MAX, and STAGE_POLL again once it changes."""

    def __init__(self) -> None:
        self._wait: float | None = None
        self._stage: object = None

    def __call__(self, view: Mapping[str, Any]) -> float:
        stage = view.get("stage")
        if self._wait is None:
            self._wait = STAGE_FIRST_POLL
        elif stage != self._stage or self._wait < STAGE_POLL:
            self._wait = STAGE_POLL
        else:
            self._wait = min(self._wait * 2, STAGE_POLL_MAX)
        self._stage = stage
        return self._wait


@dataclass(frozen=True)
class ReceiptCheck:
    """The verdict on one outcome's receipt; `problem` says why it is not verified."""

    verified: bool
    problem: str | None = None


def await_outcome(
    client: M8Client,
    upload_id: str,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_view: Callable[[dict[str, Any]], None] = lambda _view: None,
    poll: float | Callable[[Mapping[str, Any]], float] = LONG_POLL,
) -> dict[str, Any]:
    """The upload's view once it is no longer pending, or the last one seen at the
    deadline. Only `pending` is worth waiting for: a status this m8ctl does not know (a
    newer server's) ends the wait too, rather than asking again and again.

    A 429 (too many requests) does not end the wait: the upload was accepted, so m8ctl
    waits as long as Retry-After says (never past the deadline) and asks again.
    `on_view` hears each view as it comes (for a person waiting at a terminal); `poll`
    is how long one request may wait, or a function of the last view that says so
    (StagePolls lets the stage a pending view carries move on a terminal, at the cost of
    more requests).
    """
    deadline = clock() + timeout
    view: dict[str, Any] = {"status": "pending"}
    while view["status"] == "pending" and (left := deadline - clock()) > 0:
        try:
            most = poll(view) if callable(poll) else poll
            view = client.upload(upload_id, wait=min(left, most))
            on_view(view)
        except ApiError as exc:
            if exc.status != 429:
                raise
            pause = RETRY_AFTER_DEFAULT if exc.retry_after is None else exc.retry_after
            sleep(max(0.0, min(pause, deadline - clock())))
    return view


def check_receipt(
    client: M8Client,
    profile: Profile,
    claim: Mapping[str, Any],
    upload_id: str,
    store: str,
    path: str,
    ciphertext_sha256: str | None,
    now: datetime | None = None,
) -> ReceiptCheck:
    """Checks the receipt of the outcome `claim` (the API's upload view) for this upload.

    `ciphertext_sha256` is the hash of the ciphertext this client sent (or, without local
    knowledge, the one the view shows: a verified receipt vouches for it). Once a receipt
    by an endorsed successor verifies, the receipt keys before it are dropped: retired.
    """
    now = now or utc_now()
    receipt = claim.get("receipt")
    if not isinstance(receipt, Mapping):
        return ReceiptCheck(
            False,
            "the server shows no receipt from a reactor for it (outcomes recorded before "
            "reactors signed receipts carry none)",
        )
    if ciphertext_sha256 is None:
        return ReceiptCheck(
            False, "the server shows no SHA-256 of its ciphertext, which the receipt binds"
        )
    key_id = receipt.get("receipt_key_id")
    signature = _signature(receipt.get("signature"))
    if not isinstance(key_id, str) or signature is None:
        return ReceiptCheck(False, "its receipt is malformed")
    pins = profile.receipt_keys
    if key_id not in pins.pinned and key_id not in pins.dropped:
        refresh_keys(client, profile, now)  # a successor not followed yet
    if key_id in pins.dropped:
        reason = pins.dropped[key_id].reason
        return ReceiptCheck(
            False, f"its receipt is signed by receipt key {key_id!r}, no longer trusted: {reason}"
        )
    if key_id not in pins.pinned:
        return ReceiptCheck(
            False,
            f"its receipt is signed by receipt key {key_id!r}, which you have not pinned and "
            "no pinned key endorsed",
        )
    try:
        outcome = OutcomeReceipt(
            upload_id=upload_id,
            store=store,
            path=path,
            status=claim.get("status"),  # type: ignore[arg-type]  # checked by OutcomeReceipt
            upstream_version=_text(claim.get("upstream_version")),
            fingerprint=_text(claim.get("fingerprint")),
            ciphertext_sha256=ciphertext_sha256,
        )
        verify_receipt(outcome, key_id, signature, trusted(pins))
    except CryptoError:
        return ReceiptCheck(
            False,
            f"its receipt does not verify against your pinned receipt key {key_id!r}: what the "
            "server shows is not what the reactor signed, or the reactor worked on another "
            "ciphertext than the one m8ctl sent",
        )
    retired = retire_predecessors(pins, key_id, now)
    if retired.dropped:
        profile.save()
        report(retired)
    return ReceiptCheck(True)


def _signature(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)
