"""The rotator's one notion of time: UTC to the millisecond.

Milliseconds are what MongoDB keeps, so stored times round-trip exactly and a statement's
expires_at equals the one stored beside its key.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time."""
    return to_ms(datetime.now(UTC))


def to_ms(moment: datetime) -> datetime:
    """`moment` truncated to the millisecond."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
