"""A store type is one descriptor: a toy third type, registered here alone, is offered by
the API, the broker topology, `m8 reactor`, the reactors' credentials and `m8ctl`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from pydantic import Field, SecretStr, TypeAdapter, ValidationError
from typer.testing import CliRunner

from m8 import stores
from m8.api.models import store_in
from m8.client import m8ctl
from m8.crypto import FingerprintKey
from m8.crypto.envelope import MAX_VALUE_BYTES
from m8.domain import Store
from m8.messaging.permissions import definitions, permissions, services
from m8.messaging.topology import consumer_queues, reactor_queue
from m8.reactors.bootstrap import configure
from m8.reactors.cli import make_app
from m8.reactors.credentials import load_credentials
from m8.reactors.settings import ReactorSettings
from m8.reactors.stores import StoreAdapters, StoreConfigError
from m8.runtime import ConfigurationError
from m8.stores import FingerprintInMetadata, StoreConfig, StoreCredentials, StoreType
from m8.stores.adapters import (
    AdapterLimits,
    FingerprintMarks,
    UpstreamSecret,
    UpstreamVersion,
)

KEY = FingerprintKey.generate()


class ToyConfig(StoreConfig):
    """A shelf in memory. Its key goes to the reactors, not here."""

    shelf: str = Field(pattern=r"^[a-z]{1,16}$", description="Which shelf.")
    fingerprint_in_metadata: FingerprintInMetadata = False


class ToyCredentials(StoreCredentials):
    """The shelf a reactor writes to, and the key that opens it."""

    shelf: str
    key: SecretStr


class ToyStore:
    """An upstream store that keeps every version in memory."""

    store_type: ClassVar[str] = "toy"

    def __init__(self, name: str, entry: ToyCredentials, marks: FingerprintMarks) -> None:
        self.name = name
        self.entry = entry
        self.marks = marks
        self.versions: dict[str, list[tuple[bytes, str, str]]] = {}

    async def put(
        self,
        path: str,
        value: bytes,
        idempotency_key: str,
        fingerprint: str,
        before_write: Callable[[], None] = lambda: None,
    ) -> UpstreamVersion:
        versions = self.versions.setdefault(path, [])
        for number, (_, key, _) in enumerate(versions, start=1):
            if key == idempotency_key:
                return UpstreamVersion(str(number), created=False)
        before_write()
        versions.append((value, idempotency_key, self.marks.mark(fingerprint, idempotency_key)))
        return UpstreamVersion(str(len(versions)), created=True)

    async def current(self, path: str) -> UpstreamSecret | None:
        if not self.versions.get(path):
            return None
        _, key, mark = self.versions[path][-1]
        fingerprint = self.marks.read(mark, key)
        return UpstreamSecret(str(len(self.versions[path])), True, key, fingerprint)

    async def written(self, path: str, upload_id: str) -> UpstreamSecret | None:
        for number, (_, key, mark) in enumerate(self.versions.get(path, []), start=1):
            if key == upload_id:
                return UpstreamSecret(str(number), True, key, self.marks.read(mark, key))
        return None

    async def read_value(self, path: str) -> bytes | None:
        return self.versions[path][-1][0] if self.versions.get(path) else None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self.versions.clear()


def toy_adapter(
    name: str, entry: ToyCredentials, marks: FingerprintMarks, limits: AdapterLimits
) -> ToyStore:
    """The toy type's AdapterFactory."""
    return ToyStore(name, entry, marks)


TOY = StoreType(
    name="toy",
    title="Toy shelf",
    config=ToyConfig,
    credentials=ToyCredentials,
    pinned=("shelf", "fingerprint_in_metadata"),
    entry_field="shelf",
    max_value_bytes=1024 * 1024,
    adapter=f"{__name__}:toy_adapter",
)


@pytest.fixture
def toy() -> Iterator[StoreType]:
    """The toy type, registered for one test."""
    stores.register(TOY)
    yield TOY
    stores.unregister(TOY.name)


def test_the_built_in_types_keep_their_names_and_queues() -> None:
    assert stores.names() == ("vault", "aws")
    assert [q.name for q in consumer_queues()] == [
        "m8.reactor.vault",
        "m8.reactor.aws",
        "m8.keyrotator",
        "m8.api.projections",
    ]
    assert reactor_queue("aws").bindings == ("secret.secret_upload_requested.aws",)


def test_every_store_type_takes_the_largest_value_m8ctl_sends() -> None:
    assert all(t.max_value_bytes >= MAX_VALUE_BYTES for t in stores.all_types())


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'vault' is registered already"):
        stores.register(StoreType(**{**TOY.__dict__, "name": "vault"}))


def test_importing_the_store_types_loads_no_upstream_sdk() -> None:
    probe = (
        "import sys, m8.stores, m8.stores.adapters; "
        "print(','.join(m for m in ('hvac', 'boto3', 'botocore', 'requests') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_api_takes_a_toy_store_and_refuses_what_its_config_does_not_allow(
    toy: StoreType,
) -> None:
    body = TypeAdapter(store_in())
    store = body.validate_python({"type": "toy", "name": "shelf-1", "shelf": "top"})
    assert (store.type, store.name) == ("toy", "shelf-1")
    assert store.model_dump(exclude={"type", "name"}) == {
        "shelf": "top",
        "fingerprint_in_metadata": False,
    }
    for wrong in ({"shelf": "Top!"}, {"shelf": "top", "key": "k"}, {}):
        with pytest.raises(ValidationError):
            body.validate_python({"type": "toy", "name": "shelf-1", **wrong})
    schema = json.dumps(body.json_schema())
    assert "ToyStoreIn" in schema
    assert "VaultStoreIn" in schema


def test_the_topology_declares_a_queue_and_a_broker_user_for_the_toy_reactors(
    toy: StoreType,
) -> None:
    queues = {q.name: q for q in consumer_queues()}
    assert queues["m8.reactor.toy"].bindings == ("secret.secret_upload_requested.toy",)
    assert queues["m8.reactor.toy"].dead_letter_queue == "m8.dead.reactor.toy"
    assert "reactor-toy" in services()
    assert "m8-reactor-toy" in {user["name"] for user in definitions()["users"]}
    assert permissions("reactor-toy").topic_write.endswith(r"\.(toy)$")


def test_m8_reactor_offers_a_command_for_the_toy_type(toy: StoreType) -> None:
    done = CliRunner().invoke(make_app(), ["--help"])
    assert done.exit_code == 0
    assert "Writes uploads into Toy shelf stores." in done.output
    assert "Writes uploads into AWS Secrets Manager stores." in done.output
    assert CliRunner().invoke(make_app(), ["toy", "--help"]).exit_code == 0


async def test_a_reactor_reads_a_toy_entry_and_builds_its_adapter_through_the_registry(
    toy: StoreType,
) -> None:
    entries = {
        "shelf-1": {"shelf": "top", "key": "k3y"},
        "vault-1": {
            "address": "https://vault:8200",
            "mount": "kv",
            "path_prefix": "",
            "token": "t",
        },
    }
    settings = ReactorSettings(reactor_credentials=SecretStr(json.dumps(entries)))
    credentials = load_credentials(settings)
    assert isinstance(credentials.get("shelf-1"), ToyCredentials)

    adapters = StoreAdapters(credentials, AdapterLimits())
    store = Store("shelf-1", "toy", {"shelf": "top", "fingerprint_in_metadata": False})
    adapter = adapters.get(store, KEY)
    assert isinstance(adapter, ToyStore)
    written = await adapter.put("team/db", b"v", "u" * 36, "fp1:" + "1" * 43)
    assert written == UpstreamVersion("1", created=True)
    with pytest.raises(StoreConfigError, match="another shelf in the catalog"):
        adapters.get(Store("shelf-1", "toy", {"shelf": "bottom"}), KEY)
    with pytest.raises(StoreConfigError, match="is not a toy entry"):
        adapters.get(Store("vault-1", "toy", {"shelf": "top"}), KEY)
    with pytest.raises(StoreConfigError, match="toy stores have no local server"):
        StoreAdapters(type(credentials)({}, dev_unpinned_stores=True), AdapterLimits()).get(
            store, KEY
        )
    await adapters.close()


def test_m8ctl_offers_stores_add_toy_with_an_option_per_config_field(
    toy: StoreType, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []

    class Client:
        def add_store(self, body: dict[str, Any]) -> None:
            sent.append(body)

    monkeypatch.setattr(m8ctl, "_admin", lambda action, done: action(Client()))
    add = ["stores", "add"]
    runner = CliRunner()
    assert "toy" in runner.invoke(m8ctl.app, [*add, "--help"]).output
    assert "--shelf" in runner.invoke(m8ctl.app, [*add, "toy", "--help"]).output
    done = runner.invoke(
        m8ctl.app, [*add, "toy", "shelf-1", "--shelf", "top", "--fingerprint-in-metadata"]
    )
    assert done.exit_code == 0, done.output
    assert sent == [
        {"type": "toy", "name": "shelf-1", "shelf": "top", "fingerprint_in_metadata": True}
    ]
    assert runner.invoke(m8ctl.app, [*add, "toy", "shelf-2"]).exit_code != 0  # --shelf required


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"pinned": ("shelf",)}, "not exactly the pinned ones"),
        ({"credentials": StoreCredentials}, "not in its credentials"),
        ({"addresses": ("key",)}, "not pinned"),
        ({"entry_field": "nothing"}, "entry field 'nothing' not in its credentials"),
        ({"adapter": "no_function_named"}, "not 'module:function'"),
    ],
)
def test_a_descriptor_whose_catalog_could_steer_a_reactor_is_refused(
    change: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        stores.register(StoreType(**{**TOY.__dict__, **change}))
    assert "toy" not in stores.names()


def test_a_type_whose_entries_look_like_another_types_is_refused() -> None:
    class LikeVault(ToyCredentials):
        address: str

    with pytest.raises(ValueError, match="'vault' entries cannot be told apart"):
        stores.register(StoreType(**{**TOY.__dict__, "credentials": LikeVault}))


def test_a_reactor_whose_adapter_cannot_be_loaded_does_not_start() -> None:
    broken = StoreType(**{**TOY.__dict__, "adapter": "m8_no_such_sdk_adapter:factory"})
    stores.register(broken)
    try:
        with pytest.raises(ConfigurationError, match=r"install m8-stores\[toy\]"):
            configure(ReactorSettings(), "toy")
    finally:
        stores.unregister(broken.name)
