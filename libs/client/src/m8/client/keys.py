"""Keeping the profile's pins current: reading the published key lists and saying what changed.

The lists are read at login, when a statement or receipt names a key m8ctl does not know,
and when the last read is older than `KEYS_MAX_AGE`, so a key the rotator withdrew stops
being trusted within minutes even if the API never names it again.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from m8.client.pins import Changes, drop_expired, parse_published, refresh
from m8.client.profile import RECEIPT, ROTATOR, Profile
from m8.client.sdk import M8Client
from m8.crypto import format_utc
from m8.crypto.encoding import parse_utc
from m8.crypto.errors import InvalidInput

KEYS_MAX_AGE = timedelta(minutes=10)


def utc_now() -> datetime:
    """This machine's clock, which alone decides when a pin has expired."""
    return datetime.now(UTC)


def keys_stale(profile: Profile, now: datetime) -> bool:
    """Whether the published key lists should be read again before trusting a key."""
    if profile.keys_checked_at is None:
        return True
    try:
        checked = parse_utc(profile.keys_checked_at, field="keys_checked_at", error=InvalidInput)
    except InvalidInput:
        return True
    return not checked <= now < checked + KEYS_MAX_AGE  # a date in the future is no proof


def refresh_keys(client: M8Client, profile: Profile, now: datetime) -> Changes:
    """Reads both published key lists, applies them to the pins, saves and reports."""
    changes = refresh(profile.rotator_keys, parse_published(client.rotator_keys(), ROTATOR), now)
    changes.extend(
        refresh(profile.receipt_keys, parse_published(client.receipt_keys(), RECEIPT), now)
    )
    profile.keys_checked_at = format_utc(now)
    profile.save()
    report(changes)
    return changes


def expire_pins(profile: Profile, now: datetime) -> None:
    """Drops pins whose `not_after` passed by this machine's clock (no server asked)."""
    changes = drop_expired(profile.rotator_keys, now)
    changes.extend(drop_expired(profile.receipt_keys, now))
    if changes.dropped:
        profile.save()
        report(changes)


def report(changes: Changes) -> None:
    """Tells the user on stderr (stdout may be JSON for a script)."""
    for line in changes.dropped:
        print(f"note: {line}", file=sys.stderr)
    for line in changes.alarms:
        print(f"warning: {line}", file=sys.stderr)
