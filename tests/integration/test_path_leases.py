"""The path leases (`reactor_path_leases`) on the real MongoDB server: who may take one,
and that a lease given back stays given back."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from pymongo import AsyncMongoClient

from m8.eventstore.mongo import Document
from m8.reactors.path_leases import GIVEN_BACK, Held, PathLeases, Taken


def _path() -> str:
    return f"vault-1:leases/{secrets.token_hex(4)}"


async def test_a_lease_is_refused_to_another_until_given_back_and_no_late_renewal_revives_it(
    mongo: AsyncMongoClient[Document], mongo_db_name: str
) -> None:
    mine, theirs = (
        PathLeases(mongo[mongo_db_name], "reactor-1"),
        PathLeases(mongo[mongo_db_name], "reactor-2"),
    )
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
    mongo: AsyncMongoClient[Document], mongo_db_name: str
) -> None:
    mine, theirs = (
        PathLeases(mongo[mongo_db_name], "reactor-1"),
        PathLeases(mongo[mongo_db_name], "reactor-2"),
    )
    path, now = _path(), datetime.now(UTC)
    await mine.take(path, "upload-a", now + timedelta(minutes=1), now)

    assert await mine.renew(path, "upload-a", now + timedelta(minutes=5))
    assert not await theirs.renew(path, "upload-a", now + timedelta(minutes=9))
    refused = await theirs.take(path, "upload-b", now + timedelta(minutes=1), now)
    assert isinstance(refused, Held)
    assert refused.until.replace(tzinfo=UTC) >= now + timedelta(minutes=4)
