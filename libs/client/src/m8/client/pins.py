"""Which keys m8ctl trusts: pinning on first use, following endorsed successors, dropping.

One logic for both kinds of key m8ctl pins: the rotator's signing keys (they sign upload
key statements) and the reactors' receipt keys (they sign outcomes). A pin is only ever
made at login (trust on first use, shown to the user) or by following an endorsement from
a key already pinned; a key endorses at most one successor; a pin's `not_after` is the
signed one it was pinned with and never moves. Pins leave for good when their `not_after`
passes on this machine's clock or the rotator lists them as withdrawn.

Nothing here does I/O: callers pass what the server published and the current time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nacl.signing import VerifyKey

from m8.client.profile import RECEIPT, ROTATOR, DroppedKey, PinnedKey, PinSet
from m8.crypto import CryptoError, decode_verify_key, format_utc, verify_key_fingerprint
from m8.crypto.encoding import parse_utc
from m8.crypto.errors import InvalidInput
from m8.crypto.signing import endorsement_valid, key_self_signature_valid

_ID_FIELD = {ROTATOR: "signing_key_id", RECEIPT: "receipt_key_id"}
KIND_NAME = {ROTATOR: "rotator key", RECEIPT: "receipt key"}


@dataclass(frozen=True)
class PublishedKey:
    """One key as the server lists it (nothing here is trusted yet)."""

    key_id: str
    verify_key: VerifyKey
    not_after: datetime | None
    self_signature: bytes | None
    endorsed_by: str | None
    endorsement: bytes | None

    @property
    def encoded(self) -> str:
        return base64.b64encode(bytes(self.verify_key)).decode("ascii")


@dataclass(frozen=True)
class Published:
    """A published key list: the live keys and the ids the rotator withdrew."""

    keys: dict[str, PublishedKey]
    withdrawn: dict[str, str] = field(default_factory=dict)  # id -> withdrawn_at


@dataclass
class Changes:
    """What a refresh did, for the user: keys pinned, pins dropped, and alarms to report."""

    pinned: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)

    def extend(self, other: Changes) -> None:
        self.pinned += other.pinned
        self.dropped += other.dropped
        self.alarms += other.alarms


def parse_published(document: Mapping[str, Any], kind: str) -> Published:
    """The keys of `GET /v1/keys/rotator` or `/v1/keys/receipts`; malformed entries are left out."""
    keys: dict[str, PublishedKey] = {}
    for entry in document.get("keys") or []:
        try:
            key = _parse_entry(entry, kind)
        except (CryptoError, ValueError, TypeError, KeyError, AttributeError):
            continue  # an entry we cannot read is an entry we do not trust
        keys[key.key_id] = key
    withdrawn = {
        str(item["signing_key_id"]): str(item.get("withdrawn_at") or "")
        for item in document.get("withdrawn") or []
        if isinstance(item, dict) and isinstance(item.get("signing_key_id"), str)
    }
    return Published(keys, withdrawn)


def _parse_entry(entry: Mapping[str, Any], kind: str) -> PublishedKey:
    key_id = entry[_ID_FIELD[kind]]
    if not isinstance(key_id, str):
        raise TypeError("key id")
    not_after = entry.get("not_after")
    return PublishedKey(
        key_id=key_id,
        verify_key=decode_verify_key(entry["verify_key"]),
        not_after=None
        if not_after is None
        else parse_utc(not_after, field="not_after", error=InvalidInput),
        self_signature=_bytes(entry.get("self_signature")),
        endorsed_by=entry.get("endorsed_by") if isinstance(entry.get("endorsed_by"), str) else None,
        endorsement=_bytes(entry.get("endorsement")),
    )


def _bytes(text: object) -> bytes | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _pin(key: PublishedKey) -> PinnedKey:
    not_after = None if key.not_after is None else format_utc(key.not_after)
    return PinnedKey(key.encoded, verify_key_fingerprint(key.verify_key), not_after)


def drop(pins: PinSet, key_id: str, reason: str, now: datetime, changes: Changes) -> None:
    """Stops trusting `key_id` for good (only `m8ctl login --repin` starts over)."""
    pins.pinned.pop(key_id, None)
    if key_id not in pins.dropped:
        pins.dropped[key_id] = DroppedKey(reason, format_utc(now))
        changes.dropped.append(f"{KIND_NAME[pins.kind]} {key_id} is no longer trusted: {reason}")


def pin_first_use(pins: PinSet, published: Published, now: datetime) -> Changes:
    """Trust on first use (login): pins the keys nobody listed endorsed, then their successors.

    A rotator key must carry a valid self signature over its `not_after` and still be valid;
    keys endorsed by a listed key are pinned only through that endorsement, one each.
    """
    changes = Changes()
    for key in published.keys.values():
        if key.key_id in published.withdrawn or key.endorsed_by in published.keys:
            continue
        if pins.kind == ROTATOR and not _self_signed(key):
            changes.alarms.append(
                f"rotator key {key.key_id} is not self-signed over an expiry date; not pinned"
            )
            continue
        pins.pinned[key.key_id] = _pin(key)
        changes.pinned.append(key.key_id)
    changes.extend(refresh(pins, published, now))
    return changes


def _self_signed(key: PublishedKey) -> bool:
    return (
        key.not_after is not None
        and key.self_signature is not None
        and key_self_signature_valid(
            key.verify_key, key.key_id, key.not_after, key.self_signature, ROTATOR
        )
    )


def refresh(pins: PinSet, published: Published, now: datetime) -> Changes:
    """Applies a newly read key list: withdrawals, expiry, and endorsed successors."""
    changes = Changes()
    for key_id, withdrawn_at in published.withdrawn.items():
        if key_id in pins.pinned:
            when = f" at {withdrawn_at}" if withdrawn_at else ""
            drop(pins, key_id, f"the rotator withdrew it{when}", now, changes)
    _date_undated_pins(pins, published)
    drop_expired(pins, now, changes, undated=True)
    changes.extend(follow_endorsements(pins, published, now))
    drop_expired(pins, now, changes, undated=True)
    return changes


def _date_undated_pins(pins: PinSet, published: Published) -> None:
    # A rotator pin saved by an older m8ctl has no not_after: take the key's own signed one.
    # This can only bound a pin that had no bound, never extend one.
    if pins.kind != ROTATOR:
        return
    for key_id, pin in pins.pinned.items():
        key = published.keys.get(key_id)
        if pin.not_after is None and key and key.encoded == pin.verify_key and _self_signed(key):
            assert key.not_after is not None
            pin.not_after = format_utc(key.not_after)


def drop_expired(
    pins: PinSet, now: datetime, changes: Changes | None = None, *, undated: bool = False
) -> Changes:
    """Drops pins whose `not_after` has passed by this machine's clock.

    With `undated`, also rotator pins without one (after a list read could not date them).
    """
    changes = changes if changes is not None else Changes()
    for key_id, pin in list(pins.pinned.items()):
        if pin.not_after is None:
            if undated and pins.kind == ROTATOR:  # every rotator key has a signed end
                drop(pins, key_id, "it has no signed expiry date", now, changes)
        elif parse_not_after(pin.not_after) <= now:
            drop(pins, key_id, f"it expired at {pin.not_after}", now, changes)
    return changes


def follow_endorsements(pins: PinSet, published: Published, now: datetime) -> Changes:
    """Pins published keys that a pinned key endorsed, one successor per key.

    A second successor endorsed by the same key means its private half signed twice: that
    key may be in someone else's hands, and nothing tells which successor is genuine (the
    API chose which one m8ctl saw first). The key, every successor it endorsed and all they
    endorsed in turn are dropped, and it is reported. A successor signed to outlive its
    endorser by more than `MAX_SUCCESSOR_EXTENSION` is refused and reported.
    """
    changes = Changes()
    progress = True
    while progress:  # a chain of rotations: each key endorsed by the one before
        progress = False
        for endorser_id, endorser in list(pins.pinned.items()):
            if endorser_id not in pins.pinned:
                continue  # dropped earlier in this pass
            endorsed = _endorsed_by(pins, published, endorser_id, endorser.verify_key)
            first = endorser.successor
            others = sorted(k for k in endorsed if k != first)
            if first is None and len(others) == 1:
                [successor] = others
                endorser.successor = successor
                if successor not in pins.pinned and successor not in pins.dropped:
                    key = published.keys[successor]
                    progress |= _pin_successor(pins, key, endorser_id, now, changes)
            elif others:
                _second_successor(pins, published, endorser_id, first, others, now, changes)
                progress = True
    return changes


# The rotator's signing key period is at most 365 days: a successor never legitimately
# ends more than that (and a day of slack) after the key that endorsed it. Without this
# bound, one stolen key could endorse a successor that lives for ever.
MAX_SUCCESSOR_EXTENSION = timedelta(days=366)


def _pin_successor(
    pins: PinSet, key: PublishedKey, endorser_id: str, now: datetime, changes: Changes
) -> bool:
    """Pins `key`, endorsed by `endorser_id`, unless it outlives its endorser too far."""
    endorser_end = pins.pinned[endorser_id].not_after
    if endorser_end is not None:
        bound = parse_not_after(endorser_end) + MAX_SUCCESSOR_EXTENSION
        if key.not_after is None or key.not_after > bound:
            kind = KIND_NAME[pins.kind]
            until = "no end" if key.not_after is None else f"until {format_utc(key.not_after)}"
            changes.alarms.append(
                f"{kind} {endorser_id} (valid until {endorser_end}) endorsed {key.key_id}, "
                f"valid {until}: more than {MAX_SUCCESSOR_EXTENSION.days} days after its "
                f"endorser ends, which the rotator never signs. m8ctl does not trust "
                f"{key.key_id}. Tell your operator."
            )
            pins.dropped[key.key_id] = DroppedKey(
                f"its endorser {endorser_id} signed it valid {until}, more than "
                f"{MAX_SUCCESSOR_EXTENSION.days} days after its own end",
                format_utc(now),
            )
            return False
    pins.pinned[key.key_id] = _pin(key)
    changes.pinned.append(key.key_id)
    return True


def parse_not_after(text: str) -> datetime:
    """A pin's saved `not_after`."""
    return parse_utc(text, field="not_after", error=InvalidInput)


def _endorsed_by(
    pins: PinSet, published: Published, endorser_id: str, endorser_key: str | VerifyKey
) -> list[str]:
    """The published keys `endorser_id` validly endorsed (with `endorser_key`)."""
    if isinstance(endorser_key, str):
        endorser_key = decode_verify_key(endorser_key)
    found = []
    for key in published.keys.values():
        if key.endorsed_by != endorser_id or key.endorsement is None:
            continue
        if key.key_id in published.withdrawn or key.key_id == endorser_id:
            continue
        if pins.kind == ROTATOR and key.not_after is None:
            continue  # every rotator key has a signed end
        if endorsement_valid(
            endorser_key, key.key_id, key.verify_key, key.not_after, key.endorsement, pins.kind
        ):
            found.append(key.key_id)
    return found


def _second_successor(
    pins: PinSet,
    published: Published,
    endorser_id: str,
    first: str | None,
    others: list[str],
    now: datetime,
    changes: Changes,
) -> None:
    kind = KIND_NAME[pins.kind]
    successors = ([first] if first else []) + others
    lineage = _lineage(pins, published, [endorser_id, *successors])
    descendants = [k for k in lineage if k != endorser_id and k not in successors]
    gone = ", ".join(successors + descendants)
    changes.alarms.append(
        f"{kind} {endorser_id} endorsed more than one successor ({', '.join(successors)}). "
        "A key endorses only one, so someone other than the m8 servers may hold its private "
        "half, and m8ctl cannot tell which successor is genuine. m8ctl no longer trusts "
        f"{endorser_id} nor the keys it endorsed and those endorsed in turn ({gone}). Tell "
        "your operator; once they confirm the fingerprints the server shows, run "
        "`m8ctl login SERVER_URL --repin`."
    )
    drop(pins, endorser_id, "it endorsed more than one successor", now, changes)
    for key_id in lineage:
        reason = f"it descends from {endorser_id}, which endorsed more than one successor"
        if key_id in pins.pinned:
            drop(pins, key_id, reason, now, changes)
        elif key_id not in pins.dropped:  # never trusted: keep it from being followed later
            pins.dropped[key_id] = DroppedKey(reason, format_utc(now))


def _lineage(pins: PinSet, published: Published, roots: list[str]) -> list[str]:
    """`roots` and every key they endorsed, directly or in turn (as pinned or published)."""
    found: list[str] = []
    queue = list(roots)
    while queue:
        key_id = queue.pop(0)
        if key_id in found:
            continue
        found.append(key_id)
        pinned = pins.pinned.get(key_id)
        listed = published.keys.get(key_id)
        if pinned is not None:
            queue += [pinned.successor] if pinned.successor else []
            queue += _endorsed_by(pins, published, key_id, pinned.verify_key)
        elif listed is not None:  # not trusted, but its own key tells what it endorsed
            queue += _endorsed_by(pins, published, key_id, listed.verify_key)
    return found


def retire_predecessors(pins: PinSet, key_id: str, now: datetime) -> Changes:
    """Drops the pins that endorsed `key_id`, directly or in turn: it is live, they retired.

    Called once `key_id` signed something that verified (a receipt): its predecessors
    will not sign again, so they are no longer trusted to.
    """
    changes = Changes()
    successor = key_id
    while predecessor := next(
        (k for k, p in pins.pinned.items() if p.successor == successor and k != key_id), None
    ):
        reason = f"its successor {key_id} is live (it signed a receipt that verified)"
        drop(pins, predecessor, reason, now, changes)
        successor = predecessor
    return changes


def conflicts(pins: PinSet, published: Published) -> list[str]:
    """Pinned ids the server now shows with another verify key (a swap, or a re-made key)."""
    return [
        key_id
        for key_id, key in published.keys.items()
        if key_id in pins.pinned and pins.pinned[key_id].verify_key != key.encoded
    ]


def trusted(pins: PinSet) -> dict[str, VerifyKey]:
    """The verify keys currently trusted."""
    return {key_id: decode_verify_key(p.verify_key) for key_id, p in pins.pinned.items()}
