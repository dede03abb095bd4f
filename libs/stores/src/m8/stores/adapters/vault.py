"""HashiCorp Vault / OpenBao KV v2 as an upstream store.

The token or AppRole of a store needs this policy (``<prefix>`` is its path_prefix):

    path "<mount>/data/<prefix>*"     { capabilities = ["create", "update"] }
    path "<mount>/metadata/<prefix>*" { capabilities = ["read", "create", "update", "patch"] }

plus "read" on data/ for `read_value`, which tests and operators use and m8 never does.

How a put stays idempotent through crashes and redeliveries
-----------------------------------------------------------
KV v2 keeps custom_metadata per secret, not per version, and the data and the metadata
are written by two requests, so a crash can fall between them. m8 therefore keeps a
small ledger in custom_metadata, keyed by upload id:

1. read the metadata: the current version C and the ledger;
2. write ahead ``m8_pending:<upload id> = C`` (a PATCH, which merges; it also sets
   managed-by=m8, so a new secret carries the mark before it has a value);
3. write the data with check-and-set cas=C: of all writers, only one makes version C+1;
4. record ``m8_upload:<upload id> = "<C+1> <fingerprint>"``, drop the pending entry, and
   set m8_upload_id and m8_fingerprint (the latest write's, for people who look). The
   fingerprint is sealed unless the store is set to show it (marks.py).

A redelivery reads the ledger first. A recorded upload is done (created=False). A
pending one whose base is still current never wrote: write it. One whose base+1 is
current, with nobody else recorded or pending for that version, did write and lost only
step 4: record it, and make no second version. Anything else cannot be told apart from
someone else's write, so m8 writes again when that cannot lose a newer value (a
duplicate version at worst) and refuses with a permanent error when it could.

A writer that loses the check-and-set waits a moment for a twin with its upload id to
record the version (then it reports that version, created=False); otherwise it removes
its pending entry, so that no retry takes the winner's version for its own, and raises a
transient error. The ledger keeps the last LEDGER_SIZE uploads, so a late redelivery of
an older upload does not overwrite a newer value either.

Why not the other orders: metadata after the data only (no step 2) leaves a new secret
without the managed-by mark after a crash, and its redelivery would refuse it as not
managed, or else write a second version. The upload id inside the data would be atomic
with the value, but the data is what applications read, and checking it would need the
right to read secret values, which a reactor must not have.

What remains: when m8 crashes between steps 2 and 3 and, before the redelivery, a writer
that keeps no ledger (a person with write access, on a path m8 manages) makes version
C+1, the redelivery takes that version for its own. It takes a crash and a foreign write
to the same path in the same moment.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, ParamSpec, TypeVar
from urllib.parse import quote

import hvac
import requests
from hvac import exceptions as hvac_errors

from m8.stores.adapters.base import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    AdapterLimits,
    NotManagedByM8,
    PermanentUpstreamError,
    ThreadPool,
    TransientUpstreamError,
    UpstreamError,
    UpstreamSecret,
    UpstreamVersion,
    check_request,
    label,
    utf8_or_none,
)
from m8.stores.adapters.marks import FingerprintMarks
from m8.stores.vault import VaultCredentials

P = ParamSpec("P")
T = TypeVar("T")

UPLOAD_ID_KEY = "m8_upload_id"
FINGERPRINT_KEY = "m8_fingerprint"
STORED_PREFIX = "m8_upload:"
PENDING_PREFIX = "m8_pending:"
# Recorded uploads kept per secret; Vault allows 64 custom_metadata keys in all.
LEDGER_SIZE = 16
# How long a writer that lost the check-and-set waits for a twin with its upload id to
# record the version, before it gives up with a transient error.
CONFLICT_WAIT = 2.0
CONFLICT_POLL = 0.05
READINESS_PROBE = "m8-readiness-probe"


@dataclass(frozen=True)
class VaultKvConfig:
    """Where a KV v2 store lives and how m8 logs in: a token, or an AppRole."""

    name: str
    address: str
    # Sealed fingerprints, unless the store is set to show them (marks.py).
    marks: FingerprintMarks
    mount: str = "secret"
    path_prefix: str = ""
    token: str | None = field(default=None, repr=False)
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    approle_mount: str = "approle"
    adopt_unmanaged: bool = False
    timeout: float = 10.0
    max_workers: int = 8
    verify: bool | str = True  # TLS verification, or the path of a CA bundle

    def __post_init__(self) -> None:
        role = bool(self.role_id) and bool(self.secret_id)
        if bool(self.token) == role or bool(self.role_id) != bool(self.secret_id):
            raise ValueError(
                f"vault store {self.name!r}: give either a token or an AppRole role_id and "
                "secret_id"
            )


def from_credentials(
    name: str, entry: VaultCredentials, marks: FingerprintMarks, limits: AdapterLimits
) -> VaultKvStore:
    """The adapter of the store `name`, built from the reactor's entry alone."""
    return VaultKvStore(
        VaultKvConfig(
            name=name,
            address=entry.address,
            marks=marks,
            mount=entry.mount,
            path_prefix=entry.path_prefix,
            token=entry.token.get_secret_value() if entry.token else None,
            role_id=entry.role_id,
            secret_id=entry.secret_id.get_secret_value() if entry.secret_id else None,
            approle_mount=entry.approle_mount,
            adopt_unmanaged=entry.adopt_unmanaged,
            timeout=limits.timeout,
            max_workers=limits.threads,
        )
    )


@dataclass(frozen=True)
class _Metadata:
    """A secret's KV v2 metadata as far as m8 uses it."""

    current_version: int  # 0 when the secret has no versions
    custom: Mapping[str, str]

    @property
    def managed(self) -> bool:
        return self.custom.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE

    def stored(self) -> dict[str, tuple[int, str]]:
        """Recorded uploads: upload id -> (version, fingerprint)."""
        found = {}
        for key, raw in self.custom.items():
            version, _, fingerprint = raw.partition(" ")
            if key.startswith(STORED_PREFIX) and version.isdigit():
                found[key.removeprefix(STORED_PREFIX)] = (int(version), fingerprint)
        return found

    def pending(self) -> dict[str, int]:
        """Uploads written ahead and not recorded: upload id -> the version they saw."""
        return {
            key.removeprefix(PENDING_PREFIX): int(raw)
            for key, raw in self.custom.items()
            if key.startswith(PENDING_PREFIX) and raw.isdigit()
        }

    def owner(self, version: int) -> str | None:
        """The upload recorded as having written `version`."""
        return next((up for up, (v, _) in self.stored().items() if v == version), None)

    def unrecorded(self, key: str) -> int | None:
        """The version upload `key` wrote ahead of, if it did write and then stopped
        before recording it: the version after its base exists, nobody recorded it, and
        nobody else wrote ahead from the same base."""
        base = self.pending().get(key)
        if base is None or self.current_version <= base or self.owner(base + 1) is not None:
            return None
        rivals = [
            up
            for up, seen in self.pending().items()
            if up != key and seen == base and up not in self.stored()
        ]
        return None if rivals else base + 1


def _encode(value: bytes) -> dict[str, str]:
    text = utf8_or_none(value)
    if text is not None:
        return {"value": text}
    return {"value": base64.b64encode(value).decode("ascii"), "encoding": "base64"}


def _decode(data: Mapping[str, Any]) -> bytes:
    value = str(data.get("value", ""))
    if data.get("encoding") == "base64":
        return base64.b64decode(value)
    return value.encode("utf-8")


def _mount_missing(exc: hvac_errors.VaultError) -> bool:
    """Whether a 404 says the mount is missing rather than the secret."""
    return any("no handler for route" in str(e) for e in exc.errors or ())


def _cas_conflict(exc: hvac_errors.VaultError) -> bool:
    return any("check-and-set" in str(e) for e in exc.errors or ())


# The HTTP status behind each hvac error class, for the error's detail.
_STATUS: tuple[tuple[type[hvac_errors.VaultError], int], ...] = (
    (hvac_errors.InvalidRequest, 400),
    (hvac_errors.Unauthorized, 401),
    (hvac_errors.Forbidden, 403),
    (hvac_errors.InvalidPath, 404),
    (hvac_errors.PreconditionFailed, 412),
    (hvac_errors.RateLimitExceeded, 429),
    (hvac_errors.InternalServerError, 500),
    (hvac_errors.VaultNotInitialized, 501),
    (hvac_errors.BadGateway, 502),
    (hvac_errors.VaultDown, 503),
)


def classify_vault_error(
    exc: BaseException, *, store: str, action: str, path: str | None, mount: str
) -> UpstreamError | None:
    """The UpstreamError for an hvac or requests exception; None for anything else.

    The error's detail (events, the API) is m8's summary and the HTTP status or the
    client exception's class; Vault's own error strings go to the log only.
    """
    said = "; ".join(str(e) for e in getattr(exc, "errors", None) or ())
    status = next((f"HTTP {code}" for kind, code in _STATUS if isinstance(exc, kind)), None)

    def transient(summary: str, code: str | None = status) -> UpstreamError:
        return TransientUpstreamError(
            summary, store=store, path=path, action=action, code=code, said=said
        )

    def permanent(summary: str, code: str | None = status) -> UpstreamError:
        return PermanentUpstreamError(
            summary, store=store, path=path, action=action, code=code, said=said
        )

    if isinstance(exc, requests.exceptions.SSLError):
        return permanent("the TLS handshake with Vault failed (check the address and CA)")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return transient("Vault is unreachable or did not answer in time", type(exc).__name__)
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        return permanent("the Vault address is not a valid URL")
    if isinstance(exc, requests.exceptions.RequestException):
        return transient("the HTTP request failed", type(exc).__name__)
    if not isinstance(exc, hvac_errors.VaultError):
        return None
    if isinstance(exc, hvac_errors.VaultDown):
        return transient("Vault is sealed or unavailable")
    if isinstance(exc, hvac_errors.InternalServerError | hvac_errors.BadGateway):
        return transient("Vault answered with a server error")
    if isinstance(exc, hvac_errors.RateLimitExceeded):
        return transient("Vault is rate limiting m8")
    if isinstance(exc, hvac_errors.PreconditionFailed):
        return transient("a Vault standby has not caught up yet")
    if isinstance(exc, hvac_errors.UnexpectedError):
        return transient("Vault gave an unexpected answer")
    if isinstance(exc, hvac_errors.Forbidden):
        return permanent(
            f"permission denied: the token or AppRole policy does not allow this on the "
            f"store's mount ({mount!r}), or the mount does not exist"
        )
    if isinstance(exc, hvac_errors.Unauthorized):
        return permanent("not authenticated")
    if isinstance(exc, hvac_errors.InvalidPath):
        if _mount_missing(exc):
            return permanent(f"no secrets engine is mounted at {mount!r}")
        return permanent("not found")
    if isinstance(exc, hvac_errors.InvalidRequest):
        return permanent("Vault refused the request")
    if isinstance(exc, hvac_errors.VaultNotInitialized):
        return permanent("Vault is not initialized")
    return permanent("Vault refused the request", type(exc).__name__)


class VaultKvStore:
    """A KV v2 secrets engine of HashiCorp Vault or OpenBao."""

    store_type: ClassVar[str] = "vault"

    def __init__(self, config: VaultKvConfig) -> None:
        self.config = config
        self._label = label(self.store_type, config.name)
        self._pool = ThreadPool(config.max_workers, name=f"m8-vault-{config.name}")
        session = requests.Session()
        # One connection per worker thread, so none waits for another's.
        pooled = requests.adapters.HTTPAdapter(pool_maxsize=config.max_workers)
        session.mount("http://", pooled)
        session.mount("https://", pooled)
        session.verify = config.verify
        self._client = hvac.Client(
            url=config.address, token=config.token, timeout=config.timeout, session=session
        )
        self._kv = self._client.secrets.kv.v2
        self._approle = config.token is None
        self._login_lock = threading.Lock()
        self._logins = 0
        self._closed = False

    @property
    def name(self) -> str:
        """The store's name in m8."""
        return self.config.name

    async def put(
        self,
        path: str,
        value: bytes,
        idempotency_key: str,
        fingerprint: str,
        before_write: Callable[[], None] = lambda: None,
    ) -> UpstreamVersion:
        """Writes `value` as a new version of `path`, once per idempotency key; calls
        `before_write` right before the request that writes it."""
        check_request(self._label, path, idempotency_key)
        meta = await self._metadata(path)
        done = meta.stored().get(idempotency_key)
        if done is not None:
            return UpstreamVersion(str(done[0]), created=False)
        if idempotency_key in meta.pending():
            resumed = await self._resume(path, meta, idempotency_key, fingerprint)
            if resumed is not None:
                return resumed
        elif meta.current_version > 0 and not meta.managed and not self.config.adopt_unmanaged:
            raise NotManagedByM8(store=self._label, path=path)
        base = meta.current_version
        await self._call(
            "write ahead",
            path,
            self._patch_sync,
            path,
            {PENDING_PREFIX + idempotency_key: str(base), MANAGED_BY_KEY: MANAGED_BY_VALUE},
        )
        try:
            before_write()
        except Exception:
            # Left behind, the entry could make a later write of another be taken for ours.
            await self._call(
                "clear", path, self._patch_sync, path, {PENDING_PREFIX + idempotency_key: None}
            )
            raise
        version = await self._call("write", path, self._write_sync, path, _encode(value), base)
        if version is None:
            return await self._after_conflict(path, idempotency_key)
        await self._record(path, meta, idempotency_key, version, fingerprint)
        return UpstreamVersion(str(version), created=True)

    async def current(self, path: str) -> UpstreamSecret | None:
        """The current version and m8's marks on it, or None when `path` has no value."""
        meta = await self._metadata(path)
        if meta.current_version == 0:
            return None
        upload_id = meta.owner(meta.current_version)
        if upload_id is None:
            # A writer that died between its write and its record is known by the ledger.
            upload_id = next(
                (up for up in meta.pending() if meta.unrecorded(up) == meta.current_version),
                None,
            )
            return UpstreamSecret(str(meta.current_version), meta.managed, upload_id, None)
        mark = meta.stored()[upload_id][1]
        return UpstreamSecret(
            version=str(meta.current_version),
            managed=meta.managed,
            upload_id=upload_id,
            fingerprint=self.config.marks.read(mark, upload_id),
        )

    async def written(self, path: str, upload_id: str) -> UpstreamSecret | None:
        """The version upload `upload_id` wrote to `path`, current or not, as the ledger
        tells it; with its fingerprint when the write was recorded."""
        meta = await self._metadata(path)
        done = meta.stored().get(upload_id)
        if done is not None:
            return UpstreamSecret(
                version=str(done[0]),
                managed=meta.managed,
                upload_id=upload_id,
                fingerprint=self.config.marks.read(done[1], upload_id),
            )
        unrecorded = meta.unrecorded(upload_id)
        if unrecorded is None:
            return None
        return UpstreamSecret(str(unrecorded), meta.managed, upload_id, fingerprint=None)

    async def read_value(self, path: str) -> bytes | None:
        """The current value of `path`; for tests and operators only, never m8's flow."""
        return await self._call("read", path, self._value_sync, path)

    async def check(self) -> None:
        """Raises an UpstreamError unless m8 can log in and read metadata under the prefix."""
        await self._call("read metadata under the prefix", None, self._metadata_sync, None)

    async def close(self) -> None:
        """Releases the threads and HTTP connections."""
        if self._closed:
            return
        self._closed = True
        await self._pool.close()
        self._client.adapter.close()

    async def _resume(
        self, path: str, meta: _Metadata, key: str, fingerprint: str
    ) -> UpstreamVersion | None:
        """Settles an attempt that wrote ahead and then stopped; None: write (again)."""
        base = meta.pending()[key]
        current = meta.current_version
        if current <= base:
            return None  # that attempt never wrote
        if meta.unrecorded(key) == current:
            await self._record(path, meta, key, current, fingerprint)
            return UpstreamVersion(str(current), created=False)
        if current == base + 1:
            # Maybe ours, maybe another's; writing on top loses nothing newer.
            return None
        raise PermanentUpstreamError(
            "an earlier attempt of this upload stopped halfway and the secret has changed "
            "since, so m8 cannot tell whether that attempt wrote; upload again",
            store=self._label,
            path=path,
            action="write",
            said=f"version {base} then {current}",
        )

    async def _after_conflict(self, path: str, key: str) -> UpstreamVersion:
        """Another writer made the version first: a twin with our upload id, or someone else."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFLICT_WAIT
        while True:
            meta = await self._metadata(path)
            done = meta.stored().get(key)
            if done is not None:
                return UpstreamVersion(str(done[0]), created=False)
            winner = meta.owner(meta.current_version)
            if key not in meta.pending() or winner is not None or loop.time() > deadline:
                break
            await asyncio.sleep(CONFLICT_POLL)
        if key in meta.pending():
            # Left behind, our entry would let a retry take the winner's version for ours.
            await self._call("clear", path, self._patch_sync, path, {PENDING_PREFIX + key: None})
        raise TransientUpstreamError(
            "another write changed the secret first (check-and-set conflict); retry",
            store=self._label,
            path=path,
            action="write",
        )

    async def _record(
        self, path: str, meta: _Metadata, key: str, version: int, fingerprint: str
    ) -> None:
        """Records that upload `key` wrote `version`, and prunes the ledger."""
        stored = meta.stored()
        keep = sorted((up for up in stored if up != key), key=lambda up: -stored[up][0])
        changes: dict[str, str | None] = {
            STORED_PREFIX + up: None for up in keep[LEDGER_SIZE - 1 :]
        }
        changes |= {
            PENDING_PREFIX + up: None
            for up, seen in meta.pending().items()
            if up in stored or seen < version - LEDGER_SIZE
        }
        mark = self.config.marks.mark(fingerprint, key)
        changes |= {
            STORED_PREFIX + key: f"{version} {mark}",
            PENDING_PREFIX + key: None,
            UPLOAD_ID_KEY: key,
            FINGERPRINT_KEY: mark,
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
        }
        await self._call("record the upload on", path, self._patch_sync, path, changes)

    async def _metadata(self, path: str) -> _Metadata:
        return await self._call("read metadata of", path, self._metadata_sync, path)

    async def _call(
        self,
        action: str,
        path: str | None,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Runs a blocking hvac call in the pool, logged in; failures become UpstreamErrors."""
        return await self._pool.call(
            action, path, lambda: self._authenticated(lambda: fn(*args, **kwargs)), self._classify
        )

    def _classify(self, exc: BaseException, action: str, path: str | None) -> UpstreamError | None:
        return classify_vault_error(
            exc, store=self._label, action=action, path=path, mount=self.config.mount
        )

    def _authenticated(self, call: Callable[[], T]) -> T:
        """Runs `call` logged in; with AppRole, logs in again once when Vault says 403."""
        if not self._approle:
            return call()
        with self._login_lock:
            if self._logins == 0:
                self._login_locked()
            seen = self._logins
        try:
            return call()
        except hvac_errors.Forbidden:
            with self._login_lock:
                if self._logins == seen:  # no other thread has logged in again meanwhile
                    self._login_locked()
            return call()

    def _login_locked(self) -> None:
        self._client.auth.approle.login(
            role_id=self.config.role_id,
            secret_id=self.config.secret_id,
            mount_point=self.config.approle_mount,
        )
        self._logins += 1

    def _full(self, path: str | None) -> str:
        prefix = self.config.path_prefix.strip("/")
        leaf = READINESS_PROBE if path is None else path
        return f"{prefix}/{leaf}" if prefix else leaf

    def _metadata_sync(self, path: str | None) -> _Metadata:
        try:
            answer = self._kv.read_secret_metadata(self._full(path), mount_point=self.config.mount)
        except hvac_errors.InvalidPath as exc:
            if _mount_missing(exc):
                raise
            return _Metadata(current_version=0, custom={})
        data = answer["data"]
        custom = data.get("custom_metadata") or {}
        return _Metadata(int(data["current_version"]), {**custom})

    def _write_sync(self, path: str, data: dict[str, str], cas: int) -> int | None:
        """The new version, or None when check-and-set found another version current."""
        try:
            answer = self._kv.create_or_update_secret(
                self._full(path), secret=data, cas=cas, mount_point=self.config.mount
            )
        except hvac_errors.InvalidRequest as exc:
            if _cas_conflict(exc):
                return None
            raise
        return int(answer["data"]["version"])

    def _patch_sync(self, path: str, changes: dict[str, str | None]) -> None:
        """Merges `changes` into custom_metadata; None removes a key."""
        url = f"/v1/{quote(self.config.mount)}/metadata/{quote(self._full(path))}"

        def patch() -> None:
            self._client.adapter.request(
                "PATCH",
                url,
                json={"custom_metadata": changes},
                headers={"Content-Type": "application/merge-patch+json"},
            )

        try:
            patch()
        except hvac_errors.InvalidPath as exc:
            if _mount_missing(exc):
                raise
            # No metadata yet, and PATCH only changes existing metadata. A POST with
            # custom_metadata would replace what a concurrent writer patched in
            # meanwhile; this POST sets only max_versions to its default, which creates
            # the metadata and leaves custom_metadata alone if another writer was first.
            self._client.adapter.request("POST", url, json={"max_versions": 0})
            patch()

    def _value_sync(self, path: str) -> bytes | None:
        try:
            answer = self._kv.read_secret_version(
                self._full(path), mount_point=self.config.mount, raise_on_deleted_version=True
            )
        except hvac_errors.InvalidPath as exc:
            if _mount_missing(exc):
                raise
            return None
        return _decode(answer["data"]["data"])
