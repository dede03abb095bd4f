"""The path leases (`reactor_path_leases`) on the real MongoDB server: who may take one,
and that a lease given back stays given back."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from m8.eventstore.mongo import Document
from m8.reactors.path_leases import GIVEN_BACK, Held, PathLeases, Taken


@pytest.fixture
def rivals(mongo: AsyncMongoClient[Document], mongo_db_name: str) -> tuple[PathLeases, PathLeases]:
    """The leases as two reactor processes see them."""
    db = mongo[mongo_db_name]
    return PathLeases(db, "reactor-1"), PathLeases(db, "reactor-2")


def _path() -> str:
    return f"vault-1:leases/{secrets.token_hex(4)}"


async def test_a_lease_is_refused_to_another_until_given_back_and_no_late_renewal_revives_it(
    rivals: tuple[PathLeases, PathLeases], mongo: AsyncMongoClient[Document], mongo_db_name: str
) -> None:
    mine, theirs = rivals
    path, now = _path(), datetime.now(UTC)
    until = now + timedelta(minutes=1)

    assert await mine.take(path, "upload-a", until, now) == Taken(None)
    refused = await theirs.take(path, "upload-b", until, now)
    assert isinstance(refused, Held)
    assert refused.holder == "upload-a"

    await mine.give_back(path, "upload-a")
    # A renewal sent before the give-back that reaches the server after it.
    assert not await mine.renew(path, "upload-a", now + timedelta(minutes=2))
    doc = await mongo[mongo_db_name]["reactor_path_leases"].find_one({"_id": path})
    assert doc is not None
    assert doc["until"].replace(tzinfo=UTC) == GIVEN_BACK

    assert await theirs.take(path, "upload-b", until, now) == Taken("upload-a")
    assert not await mine.renew(path, "upload-a", until)  # not ours any more


async def test_a_held_lease_is_renewed_by_its_holder_only(
    rivals: tuple[PathLeases, PathLeases],
) -> None:
    mine, theirs = rivals
    path, now = _path(), datetime.now(UTC)
    await mine.take(path, "upload-a", now + timedelta(minutes=1), now)

    assert await mine.renew(path, "upload-a", now + timedelta(minutes=5))
    assert not await theirs.renew(path, "upload-a", now + timedelta(minutes=9))
    refused = await theirs.take(path, "upload-b", now + timedelta(minutes=1), now)
    assert isinstance(refused, Held)
    assert refused.until.replace(tzinfo=UTC) >= now + timedelta(minutes=4)


class RivalBetween:
    """The leases' collection, with a rival's move made right after the first read: as if
    another reactor took the lease between our read and our write."""

    def __init__(self, collection: Any, rival: Callable[[], Awaitable[object]]) -> None:
        self._collection = collection
        self._rival: Callable[[], Awaitable[object]] | None = rival

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        doc = await self._collection.find_one(*args, **kwargs)
        if self._rival is not None:
            rival, self._rival = self._rival, None
            await rival()
        return doc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


async def _take_with_a_rival_between(
    rivals: tuple[PathLeases, PathLeases], path: str, now: datetime, until: datetime
) -> Taken | Held:
    """Ours takes `path` for upload-mine while theirs takes it for upload-rival between
    our read and our write."""
    mine, theirs = rivals
    mine.collection = RivalBetween(  # type: ignore[assignment]
        mine.collection, lambda: theirs.take(path, "upload-rival", until, now)
    )
    return await mine.take(path, "upload-mine", until, now)


async def test_a_lease_taken_by_a_rival_between_our_read_and_write_stays_the_rivals(
    rivals: tuple[PathLeases, PathLeases],
) -> None:
    mine, theirs = rivals
    path, now = _path(), datetime.now(UTC)
    later = now + timedelta(minutes=1)
    await theirs.take(path, "upload-old", now - timedelta(seconds=1), now)  # run out

    taken = await _take_with_a_rival_between(rivals, path, now, later)

    assert isinstance(taken, Held)
    assert taken.holder == "upload-rival"
    assert not await mine.renew(path, "upload-mine", later)


async def test_a_new_path_a_rival_took_first_is_the_rivals(
    rivals: tuple[PathLeases, PathLeases],
) -> None:
    path, now = _path(), datetime.now(UTC)

    taken = await _take_with_a_rival_between(rivals, path, now, now + timedelta(minutes=1))

    assert isinstance(taken, Held)
    assert taken.holder == "upload-rival"


async def test_an_expired_or_settled_lease_is_taken_and_says_from_whom(
    rivals: tuple[PathLeases, PathLeases],
) -> None:
    mine, theirs = rivals
    path, now = _path(), datetime.now(UTC)
    later = now + timedelta(minutes=1)
    await theirs.take(path, "upload-a", now - timedelta(seconds=1), now)

    assert await mine.take(path, "upload-b", later, now) == Taken("upload-a")  # ran out
    assert await mine.take(path, "upload-b", later, now) == Taken("upload-b")  # a retry
    assert isinstance(await theirs.take(path, "upload-c", later, now), Held)
    # Held until later, but its upload settled (the caller read so in the Secret).
    assert await theirs.take(path, "upload-c", later, now, settled="upload-b") == Taken("upload-b")
