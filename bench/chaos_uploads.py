"""The chaos run's client side: uploads through the public API that ride out the faults.

Each upload is what `m8ctl secret put` does (a signed one-time key checked against the
pinned rotator keys, the value sealed on this side), but it asks again while the API,
the rotator or the database is away: for the key until one comes, then for the
acceptance with the very same body (same upload id), which the API answers as it did
the first time if that one was recorded. The values stay in this process only, for the
books; none is printed.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from m8.client.errors import ApiError, ClientError
from m8.client.keys import utc_now
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.crypto import (
    Binding,
    CryptoError,
    SecretBytes,
    SignedStatement,
    decode_verify_key,
    new_upload_id,
    seal_envelope,
    verify_statement,
)
from m8.devservices.system import AWS_STORE, VAULT_STORE

STORES = (VAULT_STORE, AWS_STORE)
PER_HOT_PATH = 6  # uploads to each hot path on average: well below Vault's max_versions (10)
BURST = 6  # uploads that begin together
RACING = 3  # of a burst, to the same hot path
GIVE_UP_SECONDS = 300.0  # longer than any fault of the schedule
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    store: str
    path: str


def target(n: int, count: int, prefix: str) -> Target:
    """Where upload `n` goes. Uploads begin in bursts of BURST: the first RACING of a
    burst to one of a few hot paths at once (uploads to one path racing through the API
    and the reactors), the others to paths that get about two uploads each, far apart in
    time; the stores alternate."""
    burst, place = divmod(n, BURST)
    if place < RACING:
        slot = burst % hot_paths(count)
        return Target(STORES[slot % 2], f"{prefix}/hot/{slot}")
    cold = max(1, count // 4)
    slot = (burst * (BURST - RACING) + place - RACING) % cold
    return Target(STORES[slot % 2], f"{prefix}/cold/{slot}")


def hot_paths(count: int) -> int:
    """How many hot paths: each gets about PER_HOT_PATH uploads, so that upstream keeps
    every version for the books (KV v2 keeps the last 10 by default)."""
    return max(2, count * RACING // BURST // PER_HOT_PATH)


@dataclass
class Sent:
    """One upload as the client knows it."""

    n: int
    target: Target
    value: bytes
    upload_id: str | None = None  # once the body was made
    outcome: str = "pending"  # accepted | refused:<code> | unknown (gave up asking)
    attempts: int = 0


class Transient(Exception):
    """The API or what stands behind it is away: ask again."""


def _transient(exc: ClientError) -> bool:
    if isinstance(exc, ApiError):
        # 409 `conflict`: the aggregate changed under the API's own retries, "send it
        # again" (racing uploads to one path); other 409s are the key's state.
        return exc.status >= 500 or exc.status == 429 or exc.code == "conflict"
    return True  # unreachable, or an answer that is no JSON (a dying server)


def _again(call: Callable[[], T], deadline: float, sent: Sent) -> T:
    pause = 0.2
    while True:
        sent.attempts += 1
        try:
            return call()
        except ClientError as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 2.0)


def _statement_key(profile: Profile, answer: dict[str, Any]) -> tuple[str, bytes]:
    """The key id and public key of a signed upload key checked against the pins."""
    signed = SignedStatement.from_dict(answer)
    pin = profile.rotator_keys.pinned.get(signed.signing_key_id)
    if pin is None:
        raise ClientError(f"upload key signed by an unpinned key {signed.signing_key_id!r}")
    statement = verify_statement(
        signed, {signed.signing_key_id: decode_verify_key(pin.verify_key)}, now=utc_now()
    )
    return statement.key_id, statement.public_key


def upload(client: M8Client, profile: Profile, sent: Sent) -> Sent:
    """Makes one upload, asking again through faults; `sent` says how it ended."""
    deadline = time.monotonic() + GIVE_UP_SECONDS
    store, path = sent.target.store, sent.target.path
    try:
        answer = _again(lambda: client.upload_key(path, store), deadline, sent)
        key_id, public_key = _statement_key(profile, answer)
        upload_id = new_upload_id()
        sent.upload_id = upload_id
        with SecretBytes(bytearray(sent.value)) as value:
            encrypted = seal_envelope(value, Binding(upload_id, key_id, store, path), public_key)
        body = {
            "upload_id": upload_id,
            "key_id": key_id,
            "store": store,
            "path": path,
            **encrypted.to_dict(),
        }
        _again(lambda: client.submit(body), deadline, sent)
        sent.outcome = "accepted"
    except ApiError as exc:
        sent.outcome = "unknown" if _transient(exc) else f"refused:{exc.code or exc.status}"
    except ClientError:
        sent.outcome = "unknown"
    except CryptoError:
        sent.outcome = "refused:untrusted_upload_key"
    return sent


def new_value() -> bytes:
    """A fresh random value (text, so both stores keep it as a string)."""
    return secrets.token_hex(24).encode()
