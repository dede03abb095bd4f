"""Reading what m8 knows about secrets: fingerprints, versions, history, never values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from m8.devservices import Services
from m8.domain.events import SecretStored
from tests.servers import Broker
from tests.support.api import AWS_STORE, VAULT_STORE, RunningApi, api_with_rotator
from tests.support.events import eventually

VALUE = b"the-value-itself"


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path) as running:
        await running.add_store(VAULT_STORE)
        await running.add_store(AWS_STORE)
        yield running


async def _upload(
    api: RunningApi, store: str, path: str, stored_as: str | None, who: str = "bob"
) -> str:
    """An upload through the API, then (if `stored_as`) its outcome as a reactor records it."""
    key = await api.issue_key(store, path, who=who)
    body = api.upload_body(key, VALUE)
    response = await api.call("POST", "/v1/secrets", who=who, json=body)
    assert response.status_code == 202
    if stored_as is not None:
        store_type = "vault" if store == "vault-a" else "aws"
        await api.record_outcome(
            SecretStored(body["upload_id"], store, store_type, path, stored_as, f"fp1:{stored_as}")
        )
    return str(body["upload_id"])


async def _projected(api: RunningApi, count: int, stored: int = 0) -> None:
    """Waits until `count` secrets are listed, `stored` of them with a fingerprint."""

    async def enough() -> bool:
        listed = (await api.call("GET", "/v1/secrets")).json()["secrets"]
        fingerprints = [s for s in listed if s["fingerprint"]]
        return len(listed) >= count and len(fingerprints) >= stored

    await eventually(enough)


async def test_secrets_are_listed_by_store_and_prefix(api: RunningApi) -> None:
    await _upload(api, "vault-a", "team-a/db", "1")
    await _upload(api, "vault-a", "team-b/db", "1")
    await _upload(api, "aws-b", "team-a/api", None)
    await _projected(api, 3, stored=2)

    everything = (await api.call("GET", "/v1/secrets", who="bob")).json()
    in_vault = (await api.call("GET", "/v1/secrets?store=vault-a")).json()
    team_a = (await api.call("GET", "/v1/secrets?prefix=team-a/")).json()

    assert [(s["store"], s["path"]) for s in everything["secrets"]] == [
        ("aws-b", "team-a/api"),
        ("vault-a", "team-a/db"),
        ("vault-a", "team-b/db"),
    ]
    assert [s["path"] for s in in_vault["secrets"]] == ["team-a/db", "team-b/db"]
    assert [(s["store"], s["path"]) for s in team_a["secrets"]] == [
        ("aws-b", "team-a/api"),
        ("vault-a", "team-a/db"),
    ]
    pending = everything["secrets"][0]
    assert pending["fingerprint"] is None
    assert everything["secrets"][1]["fingerprint"] == "fp1:1"


async def test_secrets_come_a_page_at_a_time_in_store_and_path_order(api: RunningApi) -> None:
    # "aws-b" < "vault-a" as stores, though "aws-b:" > "aws:" would sort ids otherwise.
    for store, path in (("vault-a", "p/0"), ("aws-b", "p/1"), ("vault-a", "p/2")):
        await _upload(api, store, path, None)
    await _projected(api, 3)

    first = (await api.call("GET", "/v1/secrets?limit=2")).json()
    rest = (await api.call("GET", f"/v1/secrets?limit=2&after={first['next_after']}")).json()

    assert [(s["store"], s["path"]) for s in first["secrets"]] == [
        ("aws-b", "p/1"),
        ("vault-a", "p/0"),
    ]
    assert [(s["store"], s["path"]) for s in rest["secrets"]] == [("vault-a", "p/2")]
    assert rest["next_after"] is None


async def test_a_secret_shows_its_current_version_and_its_history(api: RunningApi) -> None:
    first = await _upload(api, "vault-a", "team-a/db/password", "1")
    second = await _upload(api, "vault-a", "team-a/db/password", "2")

    # Each read model catches up on its own: wait for the secret and both uploads.
    async def both_stored() -> bool:
        shown = await api.call("GET", "/v1/secrets/vault-a/team-a/db/password")
        history = await api.call("GET", "/v1/history/vault-a/team-a/db/password")
        versions = [e["upstream_version"] for e in history.json().get("history", [])]
        return shown.json().get("upstream_version") == "2" and versions == ["1", "2"]

    await eventually(both_stored)
    shown = (await api.call("GET", "/v1/secrets/vault-a/team-a/db/password")).json()
    history = await api.call("GET", "/v1/history/vault-a/team-a/db/password")

    assert shown["fingerprint"] == "fp1:2"
    assert shown["stored_by"] == "bob"
    entries = history.json()["history"]
    assert [(e["upload_id"], e["upstream_version"]) for e in entries] == [
        (first, "1"),
        (second, "2"),
    ]
    assert all(e["requested_by"] == "bob" and e["completed_at"] for e in entries)
    # Metadata only: neither the value nor anything of the ciphertext is shown.
    for answer in (str(shown), history.text):
        assert "ciphertext" not in answer
        assert VALUE.decode() not in answer


async def test_a_secret_whose_last_segment_is_history_is_a_secret_like_any_other(
    api: RunningApi,
) -> None:
    await _upload(api, "vault-a", "team/history", "3")
    await _upload(api, "vault-a", "team", "4")

    async def projected() -> bool:
        shown = await api.call("GET", "/v1/secrets/vault-a/team/history")
        team = await api.call("GET", "/v1/secrets/vault-a/team")
        return (shown.json().get("fingerprint"), team.json().get("fingerprint")) == (
            "fp1:3",
            "fp1:4",
        )

    await eventually(projected)
    of_history = (await api.call("GET", "/v1/history/vault-a/team/history")).json()
    of_team = (await api.call("GET", "/v1/history/vault-a/team")).json()

    assert [e["upstream_version"] for e in of_history["history"]] == ["3"]
    assert [e["upstream_version"] for e in of_team["history"]] == ["4"]


async def test_an_unknown_secret_is_not_found(api: RunningApi) -> None:
    shown = await api.call("GET", "/v1/secrets/vault-a/no/such/path")
    history = await api.call("GET", "/v1/history/vault-a/no/such/path")

    assert shown.status_code == history.status_code == 404
    assert "'no/such/path'" in shown.json()["detail"]


async def test_a_user_sees_only_secrets_it_may_write_and_others_look_absent(
    api: RunningApi,
) -> None:
    await _upload(api, "vault-a", "team-a/db", "1", who="alice")
    await _upload(api, "vault-a", "team-b/db", "2")
    await _upload(api, "vault-a", "team-a", "3")  # "team-a/" covers what is under it only
    await _projected(api, 3)

    listed = (await api.call("GET", "/v1/secrets", who="alice")).json()
    shown = await api.call("GET", "/v1/secrets/vault-a/team-b/db", who="alice")
    history = await api.call("GET", "/v1/history/vault-a/team-b/db", who="alice")
    absent = await api.call("GET", "/v1/secrets/vault-a/team-b/nothing", who="alice")

    assert [s["path"] for s in listed["secrets"]] == ["team-a/db"]
    assert shown.status_code == history.status_code == 404
    # Word for word what a secret that does not exist gets: existence does not leak.
    assert shown.json()["detail"] == absent.json()["detail"].replace("nothing", "db")
    assert "fp1:2" not in shown.text + history.text
    as_admin = (await api.call("GET", "/v1/secrets")).json()
    assert len(as_admin["secrets"]) == 3


@pytest.mark.parametrize(
    ("in_url", "path"),
    [("a/%2E%2E/b", "a/../b"), ("a//b", "a//b"), ("x" * 257, "x" * 257)],
    ids=["dot-dot", "empty-segment", "too-long"],  # dots escaped: clients resolve them
)
async def test_a_path_in_the_url_follows_the_same_rule_as_in_a_body(
    api: RunningApi, in_url: str, path: str
) -> None:
    shown = await api.call("GET", f"/v1/secrets/vault-a/{in_url}")
    asked = await api.call("POST", "/v1/upload-keys", json={"store": "vault-a", "path": path})

    assert shown.status_code == asked.status_code == 422
    assert shown.json()["errors"][0]["field"] == "path.path"
    assert shown.json()["errors"][0]["message"] == asked.json()["errors"][0]["message"]
