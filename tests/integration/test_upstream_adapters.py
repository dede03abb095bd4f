"""One contract for every upstream store adapter, run against real OpenBao and moto.

Each contract test runs once per registered store type (m8.stores), each with its
instance in UPSTREAMS; the server behind the adapter is also read
directly (hvac, boto3), so what landed upstream is checked without the adapter's help.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import boto3
import hvac
import pytest
from mypy_boto3_secretsmanager import SecretsManagerClient

from m8 import stores
from m8.crypto import FingerprintKey
from m8.devservices.manager import free_port
from m8.stores.adapters import (
    FingerprintMarks,
    NotManagedByM8,
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamSecret,
    UpstreamStore,
    UpstreamVersion,
)
from m8.stores.adapters.aws import AwsSecretsManagerConfig, AwsSecretsManagerStore
from m8.stores.adapters.vault import VaultKvConfig, VaultKvStore
from tests.servers import Aws, Vault

FP_ONE = "fp1:" + "1" * 43
FP_TWO = "fp1:" + "2" * 43
PATH = "team/db/password"
FP_KEY = FingerprintKey.generate()  # the reactors' fingerprint key, which seals marks


def upload_id() -> str:
    """A fresh upload id, as m8ctl makes one."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Marks:
    """What the store shows about who manages a secret and which upload wrote it."""

    managed: bool
    fingerprint: str | None  # as it is upstream: sealed, or in clear
    upload_id: str | None

    def opened(self, key: FingerprintKey = FP_KEY) -> Marks:
        """The marks with a sealed fingerprint opened; a fingerprint in clear becomes None."""
        sealed = self.fingerprint if (self.fingerprint or "").startswith("fps1:") else None
        marks = FingerprintMarks(key, in_clear=False)
        return replace(self, fingerprint=marks.read(sealed, self.upload_id or ""))


class Upstream(Protocol):
    """A real store, seen both through an adapter and directly."""

    # Whether `written` tells the fingerprint of a version no longer current (the
    # adapter contract allows None there: UpstreamStore.written).
    keeps_each_versions_fingerprint: bool

    def store(
        self,
        *,
        adopt_unmanaged: bool = False,
        unreachable: bool = False,
        in_clear: bool = False,
        key: FingerprintKey = FP_KEY,
    ) -> UpstreamStore:
        """A new adapter for this store (or for a port where nothing listens); it seals
        fingerprints with `key` unless `in_clear` (the store's fingerprint_in_metadata)."""
        ...

    def write_unmanaged(self, path: str, text: str) -> None:
        """Writes a secret directly, as someone other than m8 would."""
        ...

    def value(self, path: str) -> bytes:
        """The current value, read directly."""
        ...

    def version_count(self, path: str) -> int:
        """How many versions the store holds, read directly."""
        ...

    def marks(self, path: str) -> Marks:
        """m8's marks on the secret, read directly."""
        ...


class VaultUpstream:
    """OpenBao KV v2 under the test's own path prefix."""

    keeps_each_versions_fingerprint = True  # its ledger records each write's

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.kv = hvac.Client(url=vault.addr, token=vault.token).secrets.kv.v2

    def store(
        self,
        *,
        adopt_unmanaged: bool = False,
        unreachable: bool = False,
        in_clear: bool = False,
        key: FingerprintKey = FP_KEY,
    ) -> UpstreamStore:
        address = f"http://127.0.0.1:{free_port()}" if unreachable else self.vault.addr
        return VaultKvStore(
            VaultKvConfig(
                name="contract",
                address=address,
                marks=FingerprintMarks(key, in_clear=in_clear),
                mount=self.vault.mount,
                path_prefix=self.vault.prefix,
                token=self.vault.token,
                adopt_unmanaged=adopt_unmanaged,
                timeout=2,
            )
        )

    def write_unmanaged(self, path: str, text: str) -> None:
        self.kv.create_or_update_secret(
            self.vault.prefix + path, secret={"value": text}, mount_point=self.vault.mount
        )

    def value(self, path: str) -> bytes:
        data = self.kv.read_secret_version(
            self.vault.prefix + path, mount_point=self.vault.mount, raise_on_deleted_version=True
        )["data"]["data"]
        if data.get("encoding") == "base64":
            return base64.b64decode(data["value"])
        return str(data["value"]).encode()

    def _metadata(self, path: str) -> dict[str, Any]:
        answer = self.kv.read_secret_metadata(self.vault.prefix + path, self.vault.mount)
        data: dict[str, Any] = answer["data"]
        return data

    def version_count(self, path: str) -> int:
        return int(self._metadata(path)["current_version"])

    def marks(self, path: str) -> Marks:
        custom = self._metadata(path)["custom_metadata"] or {}
        return Marks(
            managed=custom.get("managed-by") == "m8",
            fingerprint=custom.get("m8_fingerprint"),
            upload_id=custom.get("m8_upload_id"),
        )


class AwsUpstream:
    """moto's Secrets Manager under the test's own name prefix."""

    keeps_each_versions_fingerprint = False  # tags hold only the latest's

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.sm: SecretsManagerClient = boto3.client(
            "secretsmanager", endpoint_url=aws.endpoint_url, region_name=aws.region
        )

    def store(
        self,
        *,
        adopt_unmanaged: bool = False,
        unreachable: bool = False,
        in_clear: bool = False,
        key: FingerprintKey = FP_KEY,
        max_writes_per_second: float = 40,
    ) -> UpstreamStore:
        endpoint = f"http://127.0.0.1:{free_port()}" if unreachable else self.aws.endpoint_url
        return AwsSecretsManagerStore(
            AwsSecretsManagerConfig(
                name="contract",
                region=self.aws.region,
                marks=FingerprintMarks(key, in_clear=in_clear),
                name_prefix=self.aws.prefix,
                endpoint_url=endpoint,
                adopt_unmanaged=adopt_unmanaged,
                max_writes_per_second=max_writes_per_second,
                timeout=2,
            )
        )

    def write_unmanaged(self, path: str, text: str) -> None:
        self.sm.create_secret(Name=self.aws.prefix + path, SecretString=text)

    def value(self, path: str) -> bytes:
        answer: dict[str, Any] = {**self.sm.get_secret_value(SecretId=self.aws.prefix + path)}
        if answer.get("SecretBinary") is not None:
            return bytes(answer["SecretBinary"])
        return str(answer["SecretString"]).encode()

    def version_count(self, path: str) -> int:
        answer = self.sm.list_secret_version_ids(
            SecretId=self.aws.prefix + path, IncludeDeprecated=True
        )
        return len(answer["Versions"])

    def marks(self, path: str) -> Marks:
        described = self.sm.describe_secret(SecretId=self.aws.prefix + path)
        tags = {t.get("Key"): t.get("Value") for t in described.get("Tags", [])}
        return Marks(
            managed=tags.get("managed-by") == "m8",
            fingerprint=tags.get("m8-fingerprint"),
            upload_id=tags.get("m8-upload-id"),
        )


# The contract's instance per store type: its real server, through the adapter and
# directly. A registered type without one fails the test below.
UPSTREAMS: dict[str, Callable[[pytest.FixtureRequest], Upstream]] = {
    "vault": lambda request: VaultUpstream(request.getfixturevalue("vault")),
    "aws": lambda request: AwsUpstream(request.getfixturevalue("aws")),
}


def test_every_store_type_runs_the_contract() -> None:
    assert set(UPSTREAMS) == set(stores.names())


@pytest.fixture(params=stores.names())
def upstream(request: pytest.FixtureRequest) -> Upstream:
    return UPSTREAMS[request.param](request)


@pytest.fixture
async def open_store(upstream: Upstream) -> AsyncIterator[Callable[..., UpstreamStore]]:
    """Makes adapters for the test and closes them after it."""
    opened: list[UpstreamStore] = []

    def make(
        *, adopt_unmanaged: bool = False, unreachable: bool = False, in_clear: bool = False
    ) -> UpstreamStore:
        store = upstream.store(
            adopt_unmanaged=adopt_unmanaged, unreachable=unreachable, in_clear=in_clear
        )
        opened.append(store)
        return opened[-1]

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def store(open_store: Callable[..., UpstreamStore]) -> UpstreamStore:
    return open_store()


async def test_put_then_value_is_readable_upstream(
    store: UpstreamStore, upstream: Upstream
) -> None:
    key = upload_id()
    written = await store.put(PATH, b"s3cr3t", key, FP_ONE)
    assert written.created
    assert upstream.value(PATH) == b"s3cr3t"
    assert await store.read_value(PATH) == b"s3cr3t"
    assert upstream.marks(PATH).opened() == Marks(managed=True, fingerprint=FP_ONE, upload_id=key)
    assert await store.current(PATH) == UpstreamSecret(
        version=written.version, managed=True, upload_id=key, fingerprint=FP_ONE
    )


async def test_fingerprint_is_upstream_only_sealed_unless_the_store_shows_it(
    open_store: Callable[..., UpstreamStore], upstream: Upstream
) -> None:
    """Readers of the store cannot tell equal values apart; a reactor still reads it back."""
    first, second = upload_id(), upload_id()
    await open_store().put(PATH, b"same", first, FP_ONE)
    sealed_first = upstream.marks(PATH).fingerprint
    await open_store().put(PATH, b"same", second, FP_ONE)
    sealed_second = upstream.marks(PATH).fingerprint
    assert sealed_first is not None
    assert sealed_second is not None
    assert sealed_first != sealed_second  # equal values, marks that compare nothing
    assert FP_ONE[4:] not in sealed_first + sealed_second
    current = await open_store().current(PATH)
    assert current is not None
    assert (current.upload_id, current.fingerprint) == (second, FP_ONE)

    shown = upload_id()
    await open_store(in_clear=True).put(PATH, b"shown", shown, FP_TWO)
    assert upstream.marks(PATH) == Marks(managed=True, fingerprint=FP_TWO, upload_id=shown)


async def test_a_plain_fingerprint_mark_upstream_counts_only_in_a_store_that_shows_them(
    open_store: Callable[..., UpstreamStore], upstream: Upstream
) -> None:
    """In a sealed store, whoever writes upstream metadata cannot choose the fingerprint a
    reactor's recovery would record: a plain mark (as in clear) there holds none."""
    written = upload_id()
    await open_store(in_clear=True).put(PATH, b"shown", written, FP_TWO)
    assert upstream.marks(PATH).fingerprint == FP_TWO

    sealed = await open_store().current(PATH)
    shown = await open_store(in_clear=True).current(PATH)

    assert sealed is not None
    assert (sealed.upload_id, sealed.fingerprint) == (written, None)
    assert shown is not None
    assert (shown.upload_id, shown.fingerprint) == (written, FP_TWO)


async def test_same_idempotency_key_twice_makes_one_version(
    store: UpstreamStore, upstream: Upstream
) -> None:
    key = upload_id()
    first = await store.put(PATH, b"s3cr3t", key, FP_ONE)
    again = await store.put(PATH, b"s3cr3t", key, FP_ONE)
    assert (first.created, again.created) == (True, False)
    assert again.version == first.version
    assert upstream.version_count(PATH) == 1


async def test_second_upload_makes_a_new_version(store: UpstreamStore, upstream: Upstream) -> None:
    first = await store.put(PATH, b"one", upload_id(), FP_ONE)
    key = upload_id()
    second = await store.put(PATH, b"two", key, FP_TWO)
    assert second.created
    assert second.version != first.version
    assert upstream.value(PATH) == b"two"
    assert upstream.version_count(PATH) == 2
    assert upstream.marks(PATH).opened() == Marks(managed=True, fingerprint=FP_TWO, upload_id=key)


async def test_redelivered_old_upload_does_not_replace_a_newer_one(
    store: UpstreamStore, upstream: Upstream
) -> None:
    old = upload_id()
    first = await store.put(PATH, b"old", old, FP_ONE)
    await store.put(PATH, b"new", upload_id(), FP_TWO)
    again = await store.put(PATH, b"old", old, FP_ONE)
    assert again == UpstreamVersion(first.version, created=False)
    assert upstream.value(PATH) == b"new"
    assert upstream.version_count(PATH) == 2


async def test_written_tells_the_version_an_upload_wrote_current_or_not(
    store: UpstreamStore, upstream: Upstream
) -> None:
    old, new, newest = upload_id(), upload_id(), upload_id()
    first = await store.put(PATH, b"old", old, FP_ONE)
    second = await store.put(PATH, b"new", new, FP_TWO)
    third = await store.put(PATH, b"newest", newest, FP_ONE)

    earlier = await store.written(PATH, old)
    assert earlier is not None
    assert (earlier.version, earlier.upload_id) == (first.version, old)
    later = await store.written(PATH, new)
    assert later is not None
    assert (later.version, later.upload_id) == (second.version, new)
    assert later.fingerprint == (FP_TWO if upstream.keeps_each_versions_fingerprint else None)
    current = await store.written(PATH, newest)
    assert current is not None
    assert (current.version, current.upload_id, current.fingerprint) == (
        third.version,
        newest,
        FP_ONE,
    )
    assert await store.written(PATH, upload_id()) is None
    assert await store.written("never/written", old) is None


async def test_unmanaged_secret_is_not_overwritten(
    store: UpstreamStore, upstream: Upstream
) -> None:
    upstream.write_unmanaged(PATH, "theirs")
    with pytest.raises(NotManagedByM8) as refused:
        await store.put(PATH, b"ours-never-shown", upload_id(), FP_ONE)
    assert "ours-never-shown" not in str(refused.value)
    assert upstream.value(PATH) == b"theirs"
    assert upstream.version_count(PATH) == 1
    current = await store.current(PATH)
    assert current is not None
    assert not current.managed


async def test_unmanaged_secret_is_adopted_when_configured(
    open_store: Callable[..., UpstreamStore], upstream: Upstream
) -> None:
    upstream.write_unmanaged(PATH, "theirs")
    key = upload_id()
    written = await open_store(adopt_unmanaged=True).put(PATH, b"ours", key, FP_ONE)
    assert written.created
    assert upstream.value(PATH) == b"ours"
    assert upstream.marks(PATH).opened() == Marks(managed=True, fingerprint=FP_ONE, upload_id=key)
    # Once adopted, it is m8's: a store that does not adopt may write it too.
    await open_store().put(PATH, b"later", upload_id(), FP_TWO)
    assert upstream.value(PATH) == b"later"


async def test_concurrent_puts_with_same_key_make_one_version(
    store: UpstreamStore, upstream: Upstream
) -> None:
    key = upload_id()
    results = await asyncio.gather(*(store.put(PATH, b"s3cr3t", key, FP_ONE) for _ in range(5)))
    assert len({r.version for r in results}) == 1
    assert any(r.created for r in results)
    assert upstream.version_count(PATH) == 1
    assert upstream.value(PATH) == b"s3cr3t"
    assert upstream.marks(PATH).upload_id == key


async def test_binary_value_round_trips(store: UpstreamStore, upstream: Upstream) -> None:
    value = bytes(range(256))  # not UTF-8
    await store.put(PATH, value, upload_id(), FP_ONE)
    assert upstream.value(PATH) == value
    assert await store.read_value(PATH) == value


async def test_text_value_round_trips_as_text(store: UpstreamStore, upstream: Upstream) -> None:
    value = "pässwörd ✓".encode()
    await store.put(PATH, value, upload_id(), FP_ONE)
    assert upstream.value(PATH) == value
    assert await store.read_value(PATH) == value


async def test_missing_secret_has_no_current_version(store: UpstreamStore) -> None:
    assert await store.current("no/such/secret") is None
    assert await store.read_value("no/such/secret") is None


async def test_path_that_climbs_out_of_the_prefix_is_refused(store: UpstreamStore) -> None:
    with pytest.raises(PermanentUpstreamError, match="not a valid secret path"):
        await store.put("team/../../other", b"v", upload_id(), FP_ONE)


async def test_reachable_store_passes_the_readiness_check(store: UpstreamStore) -> None:
    await store.check()


async def test_unreachable_store_is_a_transient_error(
    open_store: Callable[..., UpstreamStore],
) -> None:
    unreachable = open_store(unreachable=True)
    with pytest.raises(TransientUpstreamError) as failed:
        await unreachable.put(PATH, b"never-shown", upload_id(), FP_ONE)
    assert "never-shown" not in str(failed.value)
    with pytest.raises(TransientUpstreamError):
        await unreachable.check()


# Vault only -------------------------------------------------------------------------

POLICY = """
path "{mount}/data/{prefix}*" {{ capabilities = ["create", "update"] }}
path "{mount}/metadata/{prefix}*" {{ capabilities = ["read", "create", "update", "patch"] }}
"""


@dataclass(frozen=True)
class AppRole:
    """An AppRole login with the policy m8's Vault reactor needs, and nothing more."""

    mount: str
    role_id: str
    secret_id: str


@pytest.fixture
def approle(vault: Vault) -> Iterator[AppRole]:
    """An AppRole auth mount of the test's own; its tokens live two seconds."""
    root = hvac.Client(url=vault.addr, token=vault.token)
    name = "m8-" + uuid.uuid4().hex[:10]
    root.sys.enable_auth_method("approle", path=name)
    root.sys.create_or_update_policy(name, POLICY.format(mount=vault.mount, prefix=vault.prefix))
    root.auth.approle.create_or_update_approle(
        "reactor", token_policies=[name], token_ttl="2s", token_max_ttl="2s", mount_point=name
    )
    role_id = root.auth.approle.read_role_id("reactor", mount_point=name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("reactor", mount_point=name)["data"]
    yield AppRole(name, role_id, secret_id["secret_id"])
    root.sys.disable_auth_method(name)
    root.sys.delete_policy(name)


@pytest.fixture
async def approle_store(vault: Vault, approle: AppRole) -> AsyncIterator[UpstreamStore]:
    store = VaultKvStore(
        VaultKvConfig(
            name="approle",
            address=vault.addr,
            marks=FingerprintMarks(FP_KEY, in_clear=False),
            mount=vault.mount,
            path_prefix=vault.prefix,
            role_id=approle.role_id,
            secret_id=approle.secret_id,
            approle_mount=approle.mount,
        )
    )
    yield store
    await store.close()


async def test_vault_approle_login_writes_but_cannot_read_values(
    approle_store: UpstreamStore, vault: Vault
) -> None:
    await approle_store.check()
    written = await approle_store.put(PATH, b"s3cr3t", upload_id(), FP_ONE)
    assert written.created
    assert VaultUpstream(vault).value(PATH) == b"s3cr3t"
    with pytest.raises(PermanentUpstreamError, match="permission denied"):
        await approle_store.read_value(PATH)


async def test_vault_approle_logs_in_again_when_its_token_expires(
    approle_store: UpstreamStore, vault: Vault
) -> None:
    await approle_store.put(PATH, b"one", upload_id(), FP_ONE)
    await asyncio.sleep(3)  # the token lives two seconds
    second = await approle_store.put(PATH, b"two", upload_id(), FP_TWO)
    assert second.created
    assert VaultUpstream(vault).value(PATH) == b"two"


async def test_vault_missing_mount_is_a_permanent_error(vault: Vault) -> None:
    mount = "no-such-mount-" + uuid.uuid4().hex[:8]
    store = VaultKvStore(
        VaultKvConfig(
            name="nomount",
            address=vault.addr,
            marks=FingerprintMarks(FP_KEY, in_clear=False),
            mount=mount,
            token=vault.token,
        )
    )
    try:
        with pytest.raises(PermanentUpstreamError, match=mount):
            await store.put(PATH, b"s3cr3t", upload_id(), FP_ONE)
        with pytest.raises(PermanentUpstreamError, match=mount):
            await store.check()
    finally:
        await store.close()


class Crash(Exception):
    """Stands for the reactor dying at one step of a put."""


async def crash(*_args: object, **_kwargs: object) -> None:
    raise Crash


def crash_sync(*_args: object, **_kwargs: object) -> None:
    raise Crash


@pytest.fixture
async def vault_store(vault: Vault) -> AsyncIterator[VaultKvStore]:
    store = VaultUpstream(vault).store()
    assert isinstance(store, VaultKvStore)
    yield store
    await store.close()


async def test_vault_put_that_died_before_recording_is_finished_by_its_redelivery(
    vault_store: VaultKvStore, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = upload_id()
    with monkeypatch.context() as patched:
        patched.setattr(vault_store, "_record", crash)
        with pytest.raises(Crash):
            await vault_store.put(PATH, b"s3cr3t", key, FP_ONE)
    # Before the redelivery, a newer upload's reactor taking the path over sees who wrote.
    current = await vault_store.current(PATH)
    assert current is not None
    assert (current.version, current.upload_id, current.fingerprint) == ("1", key, None)
    again = await vault_store.put(PATH, b"s3cr3t", key, FP_ONE)
    assert again == UpstreamVersion("1", created=False)
    upstream = VaultUpstream(vault)
    assert upstream.version_count(PATH) == 1
    assert upstream.marks(PATH).opened() == Marks(managed=True, fingerprint=FP_ONE, upload_id=key)


async def test_vault_put_that_died_before_writing_writes_once_on_redelivery(
    vault_store: VaultKvStore, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = upload_id()
    with monkeypatch.context() as patched:
        patched.setattr(vault_store, "_write_sync", crash_sync)
        with pytest.raises(Crash):
            await vault_store.put(PATH, b"s3cr3t", key, FP_ONE)
    again = await vault_store.put(PATH, b"s3cr3t", key, FP_ONE)
    assert again == UpstreamVersion("1", created=True)
    assert VaultUpstream(vault).version_count(PATH) == 1


async def test_vault_put_that_died_before_recording_is_found_written_under_a_newer_one(
    vault_store: VaultKvStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reactor killed between its write and its record; a newer upload written since.
    key = upload_id()
    with monkeypatch.context() as patched:
        patched.setattr(vault_store, "_record", crash)
        with pytest.raises(Crash):
            await vault_store.put(PATH, b"old", key, FP_ONE)
    await vault_store.put(PATH, b"new", upload_id(), FP_TWO)

    found = await vault_store.written(PATH, key)
    assert found is not None
    assert (found.version, found.upload_id, found.fingerprint) == ("1", key, None)


async def test_vault_put_that_died_before_writing_is_not_found_written(
    vault_store: VaultKvStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = upload_id()
    with monkeypatch.context() as patched:
        patched.setattr(vault_store, "_write_sync", crash_sync)
        with pytest.raises(Crash):
            await vault_store.put(PATH, b"old", key, FP_ONE)
    await vault_store.put(PATH, b"new", upload_id(), FP_TWO)

    assert await vault_store.written(PATH, key) is None


async def test_vault_put_stopped_by_its_lease_before_writing_leaves_no_pending_entry(
    vault_store: VaultKvStore, vault: Vault
) -> None:
    key = upload_id()

    def lease_lost() -> None:
        raise LookupError("stands for LeaseLost")

    with pytest.raises(LookupError):
        await vault_store.put(PATH, b"old", key, FP_ONE, lease_lost)
    await vault_store.put(PATH, b"new", upload_id(), FP_TWO)

    assert key not in (await vault_store._metadata(PATH)).pending()
    assert await vault_store.written(PATH, key) is None
    assert VaultUpstream(vault).version_count(PATH) == 1


async def test_vault_redelivery_that_cannot_tell_whether_it_wrote_refuses_to_guess(
    vault_store: VaultKvStore, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = upload_id()
    with monkeypatch.context() as patched:
        patched.setattr(vault_store, "_record", crash)
        with pytest.raises(Crash):
            await vault_store.put(PATH, b"old", key, FP_ONE)
    await vault_store.put(PATH, b"new", upload_id(), FP_TWO)
    with pytest.raises(PermanentUpstreamError, match="cannot tell"):
        await vault_store.put(PATH, b"old", key, FP_ONE)
    assert VaultUpstream(vault).value(PATH) == b"new"


# AWS only ---------------------------------------------------------------------------


async def test_aws_write_rate_limit_holds(aws: Aws) -> None:
    rate, writes = 5.0, 6
    store = AwsUpstream(aws).store(max_writes_per_second=rate)
    try:
        started = time.monotonic()
        await asyncio.gather(
            *(store.put(f"rate/{i}", b"v", upload_id(), FP_ONE) for i in range(writes))
        )
        elapsed = time.monotonic() - started
    finally:
        await store.close()
    assert elapsed >= (writes - 1) / rate - 0.01


async def test_aws_put_that_died_before_tagging_is_finished_by_its_redelivery(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = AwsUpstream(aws)
    store = upstream.store()
    assert isinstance(store, AwsSecretsManagerStore)
    try:
        await store.put(PATH, b"one", upload_id(), FP_ONE)
        key = upload_id()
        with monkeypatch.context() as patched:
            patched.setattr(store, "_tag_sync", crash_sync)
            with pytest.raises(Crash):
                await store.put(PATH, b"two", key, FP_TWO)
        assert await store.current(PATH) == UpstreamSecret(
            version=key, managed=True, upload_id=key, fingerprint=None
        )
        again = await store.put(PATH, b"two", key, FP_TWO)
    finally:
        await store.close()
    assert again == UpstreamVersion(key, created=False)
    assert upstream.version_count(PATH) == 2
    assert upstream.marks(PATH).opened() == Marks(managed=True, fingerprint=FP_TWO, upload_id=key)
