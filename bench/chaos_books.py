"""The chaos run's books: what the event store says of each upload, against upstream.

The event store is read straight from MongoDB (the API may be down while the run waits);
upstream is read with the operator's read path (hvac, boto3), never m8's. Counted:

- lost: accepted by the API but not recorded, or stored but its value is not upstream at
  the version its outcome names;
- duplicated: upstream versions of a path beyond the number of its uploads stored;
- stuck: recorded but still without an outcome (pending) at the end;
- out of order: the value upstream is not that of the latest accepted upload to the path
  that was stored (acceptance order: the Secret aggregate's event versions);
- failed: SecretStoreFailed and no later final outcome (the message is in the
  dead-letter queue for an operator's re-drive), counted apart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import hvac
from botocore.exceptions import ClientError
from hvac.exceptions import InvalidPath
from pymongo.asynchronous.database import AsyncDatabase

from bench.chaos_uploads import Sent
from m8 import stores
from m8.devservices.system import AWS_STORE, VAULT_STORE
from m8.eventstore.mongo import Document

REQUESTED = "SecretUploadRequested"
OUTCOMES = {
    "SecretStored": "stored",
    "SecretUploadRejected": "rejected",
    "SecretUploadSuperseded": "superseded",
    "SecretStoreFailed": "failed",
}
FINAL = frozenset({"stored", "rejected", "superseded"})
PREFIX = "m8/"  # the dev stores' path_prefix and name_prefix


@dataclass
class Recorded:
    """One upload as the event store holds it."""

    upload_id: str
    secret_id: str
    store: str
    path: str
    requested: int  # the SecretUploadRequested's version in the Secret: acceptance order
    status: str = "pending"
    upstream_version: str | None = None
    settled_at: float | None = None  # recorded_at of the final outcome (or of failed)


async def recorded(db: AsyncDatabase[Document]) -> dict[str, Recorded]:
    """Every upload the event store holds, with its outcome, by upload id."""
    fields = {
        "type": 1, "version": 1, "aggregate_id": 1, "recorded_at": 1,
        "data.upload_id": 1, "data.store": 1, "data.path": 1, "data.upstream_version": 1,
    }  # fmt: skip
    requests: dict[str, Recorded] = {}
    outcomes: list[Mapping[str, Any]] = []
    async for doc in db.events.find({"aggregate_type": "secret"}, fields).sort("_id", 1):
        data = doc["data"]
        if doc["type"] == REQUESTED:
            requests[data["upload_id"]] = Recorded(
                data["upload_id"], doc["aggregate_id"], data["store"], data["path"], doc["version"]
            )
        elif doc["type"] in OUTCOMES:
            outcomes.append(doc)
    for outcome in sorted(outcomes, key=lambda d: (d["aggregate_id"], d["version"])):
        found = requests.get(outcome["data"]["upload_id"])
        status = OUTCOMES[outcome["type"]]
        if found is None or (found.status in FINAL and status == "failed"):
            continue
        found.status = status
        found.settled_at = outcome["recorded_at"].timestamp()
        if status == "stored":
            found.upstream_version = str(outcome["data"]["upstream_version"])
    return requests


async def wait_settled(
    db: AsyncDatabase[Document], ids: Iterable[str], timeout: float
) -> dict[str, Recorded]:
    """Polls the event store until every upload of `ids` it holds has an outcome (final
    or failed) and every one of `ids` is recorded, or until `timeout`; the last reading."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        books = await recorded(db)
        open_ = [u for u in wanted if u not in books or books[u].status == "pending"]
        if not open_ or time.monotonic() > deadline:
            return books
        await asyncio.sleep(1.0)


class Upstreams:
    """The dev stores' upstream servers, read as an operator reads them."""

    def __init__(self, vault_url: str, vault_token: str, aws_url: str) -> None:
        self.vault = hvac.Client(url=vault_url, token=vault_token)
        self.kv = self.vault.secrets.kv.v2
        dev = stores.get("aws").dev
        login = dev.reactor_environment if dev is not None else {}
        self.sm = boto3.session.Session(
            region_name="us-east-1",
            aws_access_key_id=login.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=login.get("AWS_SECRET_ACCESS_KEY"),
        ).client("secretsmanager", endpoint_url=aws_url)

    def value(self, store: str, path: str, version: str | None = None) -> bytes | None:
        """The value at `version` (the current one if None), or None if there is none."""
        if store == VAULT_STORE:
            try:
                answer = self.kv.read_secret_version(
                    PREFIX + path,
                    version=int(version) if version is not None else None,
                    mount_point="secret",
                    raise_on_deleted_version=True,
                )
            except InvalidPath:
                return None
            return str(answer["data"]["data"].get("value", "")).encode()
        assert store == AWS_STORE
        ask: dict[str, str] = {"SecretId": PREFIX + path}
        if version is not None:
            ask["VersionId"] = version
        try:
            found: Mapping[str, Any] = self.sm.get_secret_value(**ask)
        except ClientError:
            return None
        if found.get("SecretBinary") is not None:
            return bytes(found["SecretBinary"])
        return str(found.get("SecretString", "")).encode()

    def kept(self, store: str, path: str) -> set[str]:
        """The versions upstream still keeps of `path` (Vault prunes beyond max_versions,
        AWS beyond about 100): only those can be read back."""
        if store == VAULT_STORE:
            try:
                answer = self.kv.read_secret_metadata(PREFIX + path, mount_point="secret")
            except InvalidPath:
                return set()
            versions: Mapping[str, Mapping[str, Any]] = answer["data"]["versions"]
            return {v for v, meta in versions.items() if not meta.get("destroyed")}
        try:
            listed = self.sm.list_secret_version_ids(
                SecretId=PREFIX + path, IncludeDeprecated=True, MaxResults=100
            )
        except ClientError:
            return set()
        return {str(v["VersionId"]) for v in listed["Versions"]}

    def owners(self, store: str, path: str, versions: set[str]) -> list[str]:
        """Each of `versions` with the upload m8's marks name as its writer, if any: for an
        AWS version that is its id; for Vault the `m8_upload:<id>` entry naming it."""
        if store != VAULT_STORE:
            return sorted(versions)
        try:
            answer = self.kv.read_secret_metadata(PREFIX + path, mount_point="secret")
        except InvalidPath:
            return sorted(versions)
        custom: Mapping[str, str] = answer["data"].get("custom_metadata") or {}
        writers = {
            str(mark).split(" ")[0]: key.removeprefix("m8_upload:")
            for key, mark in custom.items()
            if key.startswith("m8_upload:")
        }
        return [f"{v} ({writers.get(v, 'no m8 mark')})" for v in sorted(versions)]

    def version_count(self, store: str, path: str) -> int:
        """How many versions upstream holds for `path` (0 if none)."""
        if store == VAULT_STORE:
            try:
                answer = self.kv.read_secret_metadata(PREFIX + path, mount_point="secret")
            except InvalidPath:
                return 0
            return int(answer["data"]["current_version"])
        try:
            listed = self.sm.list_secret_version_ids(
                SecretId=PREFIX + path, IncludeDeprecated=True, MaxResults=100
            )
        except ClientError:
            return 0
        return len(listed["Versions"])

    def close(self) -> None:
        self.vault.adapter.close()
        self.sm.close()


@dataclass
class Books:
    """The verdict of one run, with the upload ids behind each bad count."""

    statuses: Counter[str] = field(default_factory=Counter)
    client: Counter[str] = field(default_factory=Counter)  # accepted, refused:..., unknown
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # "<secret id> <n> extra"
    stuck: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)  # "<secret id> <upload id>"
    failed: list[str] = field(default_factory=list)
    pruned: int = 0  # stored uploads whose version upstream no longer keeps: not checked
    paths: int = 0
    last_outcome_at: float | None = None

    @property
    def duplicated_versions(self) -> int:
        return sum(int(entry.split()[1]) for entry in self.duplicated)


def audit(sent: list[Sent], books: Mapping[str, Recorded], upstream: Upstreams) -> Books:
    """Checks the books of one run against upstream (blocking: the operator's clients)."""
    result = Books()
    values = {s.upload_id: s.value for s in sent if s.upload_id is not None}
    result.client.update(s.outcome for s in sent)
    for s in sent:
        if s.outcome == "accepted" and s.upload_id not in books:
            result.lost.append(str(s.upload_id))
    ours = [r for r in books.values() if r.upload_id in values]
    result.statuses.update(r.status for r in ours)
    by_path: dict[str, list[Recorded]] = {}
    for r in ours:
        by_path.setdefault(r.secret_id, []).append(r)
        if r.status == "pending":
            result.stuck.append(r.upload_id)
        elif r.status == "failed":
            result.failed.append(r.upload_id)
        if r.settled_at is not None:
            result.last_outcome_at = max(result.last_outcome_at or 0.0, r.settled_at)
    result.paths = len(by_path)
    for secret_id, uploads in sorted(by_path.items()):
        store, path = uploads[0].store, uploads[0].path
        stored = [r for r in uploads if r.status == "stored"]
        kept = upstream.kept(store, path)
        for r in stored:
            if r.upstream_version not in kept:
                if r.upstream_version is not None and _pruned(store, r.upstream_version, kept):
                    result.pruned += 1
                else:
                    result.lost.append(r.upload_id)
            elif upstream.value(store, path, r.upstream_version) != values[r.upload_id]:
                result.lost.append(r.upload_id)
        extra = upstream.version_count(store, path) - len(stored)
        if extra > 0:
            known = {r.upstream_version for r in stored}
            unknown = upstream.owners(store, path, kept - known)
            result.duplicated.append(f"{secret_id} {extra} extra: {', '.join(unknown)}")
        current = upstream.value(store, path)
        if stored:
            latest = max(stored, key=lambda r: r.requested)
            if current != values[latest.upload_id]:
                owner = next((u for u, v in values.items() if v == current), "none")
                result.out_of_order.append(f"{secret_id} {owner} (latest {latest.upload_id})")
        elif current is not None:
            result.out_of_order.append(f"{secret_id} upstream holds a value; none stored")
    return result


def _pruned(store: str, version: str, kept: set[str]) -> bool:
    """Whether a Vault version is older than every one upstream keeps (pruned by
    max_versions), rather than missing."""
    numbers = [int(v) for v in kept if v.isdigit()]
    return (
        store == VAULT_STORE and version.isdigit() and bool(numbers) and int(version) < min(numbers)
    )
