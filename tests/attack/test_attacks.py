"""Attacks through m8's public interfaces, each refused with a clear error, with nothing
written upstream and nothing recorded in the event store but the refusal's own record.

Interfaces: the HTTP API (as the admin, alice who may write team-a/ only, and OIDC
tokens), m8's client library behind a malicious API (conftest.MaliciousApi), and the
broker on a service's own user. Each test adds its row (case, expected, got) to the table
conftest.py prints; `got` is what happened, taken from the answer or the exception.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused
from nacl.public import PrivateKey

from m8.client.errors import ClientError, UntrustedKey
from m8.client.outcome import ReceiptCheck, await_outcome, check_receipt
from m8.client.profile import Profile
from m8.client.upload import put_secret, read_value
from m8.crypto import (
    OutcomeReceipt,
    ReceiptSigningKey,
    RotatorSigningKey,
    UploadKeyStatement,
    format_utc,
    sign_receipt,
)
from m8.domain import secret_id
from m8.domain.events import SecretStored, SecretUploadRequested
from m8.eventsourcing import Metadata, StoredEvent
from m8.messaging.topology import reactor_queue
from tests.attack.conftest import (
    AWS,
    INACTIVE,
    VAULT,
    AttackTable,
    Forward,
    MaliciousApi,
    World,
    assert_problem,
    failure,
    logged_in,
    m8_client,
    new_path,
    problem,
)
from tests.e2e.test_client_trust import flip, future, pin_of, statement_by
from tests.integration.test_forged_messages import _dead_lettered
from tests.integration.test_reactor import uploads_counted
from tests.support.events import eventually
from tests.support.uploads import Clock, secret_value

SECRETS = "/v1/secrets"
MALLORY = Metadata(actor="mallory", correlation_id="corr-attack")


async def _nothing_changed(world: World, before: set[str], *where: tuple[str, str]) -> None:
    """No event since `before`, and no upstream version at any (store, path) of `where`."""
    assert await world.added_since(before) == []
    for store, path in where:
        assert world.versions(store, path) == 0, (store, path)


# --- ciphertexts the reactor refuses ----------------------------------------------------------

REFUSED_UPLOAD = [
    "SecretUploadRequested",
    "UploadKeyClaimed",
    "SecretUploadRejected",
    "UploadKeyDestroyed",
]


@pytest.mark.parametrize(
    ("field", "case"),
    [
        ("ciphertext", "tampered ciphertext (one bit)"),
        ("nonce", "tampered nonce (one bit)"),
        ("client_public_key", "tampered client public key (one bit)"),
    ],
)
async def test_a_tampered_upload_is_rejected_by_the_reactor_and_never_written(
    field: str, case: str, world: World, table: AttackTable
) -> None:
    path = new_path(field)
    key = await world.api.issue_key(VAULT, path)
    body = flip(field)(world.api.upload_body(key, secret_value()))
    before = await world.event_ids()

    accepted = await world.api.call("POST", SECRETS, who="alice", json=body)
    url = f"/v1/uploads/{body['upload_id']}?wait=30"
    view = (await world.api.call("GET", url, who="alice")).json()
    await world.key_destroyed(key.key_id, "rejected")

    got = f"{accepted.status_code}, then {view['status']} {view.get('reason')}: {view['detail']}"
    table.add(case, "accepted, then SecretUploadRejected bad_mac (signed)", got)
    assert accepted.status_code == 202, accepted.text
    assert (view["status"], view["reason"]) == ("rejected", "bad_mac")
    assert view["receipt"] is not None  # the refusal is the reactor's, signed
    assert sorted(await world.added_since(before)) == sorted(REFUSED_UPLOAD)
    assert world.versions(VAULT, path) == 0


# --- replays and keys used out of their place, at the API -------------------------------------


async def _stored(world: World, path: str) -> tuple[UploadKeyStatement, dict[str, Any]]:
    """An honest upload by alice, stored upstream, its key destroyed as used."""
    key = await world.api.issue_key(VAULT, path)
    body = world.api.upload_body(key, secret_value())
    assert (await world.api.call("POST", SECRETS, who="alice", json=body)).status_code == 202
    url = f"/v1/uploads/{body['upload_id']}?wait=30"
    assert (await world.api.call("GET", url, who="alice")).json()["status"] == "stored"
    await world.key_destroyed(key.key_id, "used")
    return key, body


async def test_a_replayed_stored_upload_gets_its_first_answer_and_writes_nothing(
    world: World, table: AttackTable
) -> None:
    path = new_path("replay")
    _, body = await _stored(world, path)
    before = await world.event_ids()

    replayed = await world.api.call("POST", SECRETS, who="alice", json=body)
    view = (await world.api.call("GET", f"/v1/uploads/{body['upload_id']}", who="alice")).json()

    answer = replayed.json().get("status")
    got = f"{replayed.status_code} {answer} (the same upload), which is now {view['status']}"
    table.add(
        "replay of a stored upload (same request)", "the first answer again; no new write", got
    )
    assert replayed.status_code == 202
    assert replayed.json()["upload_id"] == body["upload_id"]
    assert await world.added_since(before) == []
    assert world.versions(VAULT, path) == 1  # the honest upload's, only


async def test_a_new_upload_id_on_a_used_key_is_refused(world: World, table: AttackTable) -> None:
    path = new_path("reuse")
    key, _ = await _stored(world, path)
    before = await world.event_ids()

    again = await world.api.call(
        "POST", SECRETS, who="alice", json=world.api.upload_body(key, secret_value())
    )

    table.add("a new upload id on a used key", "409 upload_key_used/destroyed", problem(again))
    assert_problem(again, 409, "upload_key_used", "upload_key_destroyed")
    assert await world.added_since(before) == []
    assert world.versions(VAULT, path) == 1


@pytest.mark.parametrize(
    ("issued_for", "case"),
    [
        ("path", "a key issued for another path (API)"),
        ("store", "a key issued for another store (API)"),
    ],
)
async def test_a_key_issued_for_another_path_or_store_is_refused_at_the_api(
    issued_for: str, case: str, world: World, table: AttackTable
) -> None:
    path = new_path(f"other-{issued_for}")
    elsewhere = (VAULT, new_path("issued")) if issued_for == "path" else (AWS, path)
    key = await world.api.issue_key(*elsewhere)
    body = world.api.upload_body(key, secret_value(), store=VAULT, path=path)
    before = await world.event_ids()

    response = await world.api.call("POST", SECRETS, who="alice", json=body)

    table.add(case, "409 upload_key_mismatch", problem(response))
    assert_problem(response, 409, "upload_key_mismatch")
    await _nothing_changed(world, before, (VAULT, path), elsewhere)


async def test_an_expired_key_is_refused(
    world: World, table: AttackTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = new_path("expired")
    key = await world.api.issue_key(VAULT, path)
    body = world.api.upload_body(key, secret_value())
    before = await world.event_ids()
    # The API's clock past the key's lifetime (15 minutes), rather than waiting for it.
    clock = Clock()
    monkeypatch.setattr(world.api.context.commands, "now", clock)

    with clock.moved(timedelta(minutes=16)):
        response = await world.api.call("POST", SECRETS, who="alice", json=body)

    table.add("an expired key", "409 upload_key_expired", problem(response))
    assert_problem(response, 409, "upload_key_expired")
    await _nothing_changed(world, before, (VAULT, path))


async def test_an_upload_to_an_inactive_store_is_refused(world: World, table: AttackTable) -> None:
    path = new_path("inactive")
    # A key issued while the store was active, then the admin deactivated it.
    key = await world.api.issue_key(INACTIVE, path)
    assert (await world.api.call("POST", f"/v1/stores/{INACTIVE}/deactivate")).is_success
    before = await world.event_ids()

    response = await world.api.call(
        "POST", SECRETS, who="alice", json=world.api.upload_body(key, secret_value())
    )

    table.add("an upload to an inactive store", "409 store_inactive", problem(response))
    assert_problem(response, 409, "store_inactive")
    await _nothing_changed(world, before, (INACTIVE, path))


# --- the same, as forged events published straight to the broker -------------------------------


@pytest.mark.parametrize(
    ("issued_for", "case"),
    [
        ("path", "a key for another path, as a forged event on the broker"),
        ("store", "a key for another store, as a forged event on the broker"),
    ],
)
async def test_a_forged_upload_request_on_the_broker_is_dead_lettered_and_never_written(
    issued_for: str, case: str, world: World, table: AttackTable
) -> None:
    path = new_path(f"forged-{issued_for}")
    elsewhere = (VAULT, new_path("issued")) if issued_for == "path" else (AWS, path)
    key = await world.api.issue_key(*elsewhere)
    body = world.api.upload_body(key, secret_value(), store=VAULT, path=path)
    request = SecretUploadRequested(
        upload_id=body["upload_id"],
        store=VAULT,
        store_type="vault",
        path=path,
        key_id=key.key_id,
        client_public_key=body["client_public_key"],
        nonce=body["nonce"],
        ciphertext=body["ciphertext"],
        ciphertext_sha256=hashlib.sha256(base64.b64decode(body["ciphertext"])).hexdigest(),
        requested_by="mallory",
    )
    forged = StoredEvent.new("secret", secret_id(VAULT, path), 1, request, MALLORY)
    before = await world.event_ids()

    # The API's own broker user may publish upload requests: a leaked API credential.
    await world.publish_as("api", forged)
    await _dead_lettered(world.amqp, reactor_queue("vault"), forged.event_id)

    dead = reactor_queue("vault").dead_letter_queue
    got = f"published as api, then found in {dead}, the reactor's dead-letter queue"
    table.add(case, "dead-lettered (not in the event store), not written", got)
    await _nothing_changed(world, before, (VAULT, path), elsewhere)


async def test_a_stored_uploads_request_replayed_on_the_broker_writes_nothing_more(
    world: World, table: AttackTable
) -> None:
    path = new_path("replay-broker")
    await _stored(world, path)
    events = await world.recorder.load("secret", secret_id(VAULT, path))
    [request] = [e for e in events if e.event_type == "SecretUploadRequested"]
    duplicates = uploads_counted(world.reactors, "vault", VAULT, "duplicate")
    before = await world.event_ids()

    await world.publish_as("api", request)  # a leaked API credential, again

    async def seen_as_duplicate() -> bool:
        return uploads_counted(world.reactors, "vault", VAULT, "duplicate") > duplicates

    await eventually(seen_as_duplicate)
    got = f"published as api; reactor: duplicate, {world.versions(VAULT, path)} upstream version"
    table.add("replay of a stored upload's event on the broker", "duplicate; no new write", got)
    assert await world.added_since(before) == []
    assert world.versions(VAULT, path) == 1


# --- what m8's client must refuse from a malicious API ------------------------------------------

UPLOAD_KEYS = "/v1/upload-keys"
UPLOADS = "/v1/uploads/.+"
UNTRUSTED = "UntrustedKey (m8ctl exit 7), nothing sent"
Prepare = Callable[[Profile], None]  # changes the profile after login, before the put


def _answer(document: Any, status: int = 201) -> httpx.Response:
    return httpx.Response(status, json=document)


def _put(
    transport: MaliciousApi, directory: Path, path: str, prepare: Prepare | None = None
) -> ReceiptCheck:
    """m8's client puts a value at `path` in its profile's store (in a worker thread)."""
    with m8_client(transport) as client:
        profile = logged_in(client, directory)
        if prepare is not None:
            prepare(profile)
        accepted = put_secret(client, profile, path, None, read_value(bytearray(secret_value())))
        view = await_outcome(client, accepted["upload_id"], timeout=30)
        return check_receipt(
            client,
            profile,
            view,
            accepted["upload_id"],
            accepted["store"],
            accepted["path"],
            accepted["ciphertext_sha256"],
        )


async def _refused_by_client(
    transport: MaliciousApi, tmp_path: Path, path: str, prepare: Prepare | None = None
) -> ClientError:
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(_put, transport, tmp_path, path, prepare)
    return refused.value


async def test_a_forged_statement_is_refused_by_the_client(
    world: World, table: AttackTable, tmp_path: Path
) -> None:
    path = new_path("forged-statement")
    transport = MaliciousApi(world)
    pinned: list[str] = []

    def forge(request: httpx.Request, forward: Forward) -> httpx.Response:
        # Signed by the attacker's key under the id of the pinned rotator key.
        asked = json.loads(request.content)
        return _answer(statement_by(RotatorSigningKey.generate(pinned[0]), asked["store"], path))

    transport.on("POST", UPLOAD_KEYS, forge)
    before = await world.event_ids()

    refused = await _refused_by_client(
        transport, tmp_path, path, lambda p: pinned.extend(p.rotator_keys.pinned)
    )

    table.add("a forged statement (client)", UNTRUSTED, failure(refused))
    assert isinstance(refused, UntrustedKey)
    assert "failed verification" in refused.message
    assert not transport.reached("POST", SECRETS)
    await _nothing_changed(world, before, (VAULT, path))


async def test_an_unsigned_statement_is_refused_by_the_client(
    world: World, table: AttackTable, tmp_path: Path
) -> None:
    path = new_path("unsigned")
    transport = MaliciousApi(world)

    def unsigned(request: httpx.Request, forward: Forward) -> httpx.Response:
        asked = json.loads(request.content)
        forged = statement_by(RotatorSigningKey.generate("rsk-none"), asked["store"], path)
        return _answer({"statement": forged["statement"]})  # no signer, no signature

    transport.on("POST", UPLOAD_KEYS, unsigned)
    before = await world.event_ids()

    refused = await _refused_by_client(transport, tmp_path, path)

    table.add("an unsigned statement (client)", UNTRUSTED, failure(refused))
    assert isinstance(refused, UntrustedKey)
    assert "malformed upload key" in refused.message
    assert not transport.reached("POST", SECRETS)
    await _nothing_changed(world, before, (VAULT, path))


async def test_a_statement_signed_by_a_retired_key_is_refused_by_the_client(
    world: World, table: AttackTable, tmp_path: Path
) -> None:
    path = new_path("retired")
    transport = MaliciousApi(world)
    kept = RotatorSigningKey.generate(f"rsk-retired-{uuid.uuid4().hex[:6]}")  # a kept seed
    withdrawn = {"signing_key_id": kept.signing_key_id, "withdrawn_at": format_utc(future(-1))}

    def listed(request: httpx.Request, forward: Forward) -> httpx.Response:
        published = forward(request).json()
        return _answer({**published, "withdrawn": [*published["withdrawn"], withdrawn]}, 200)

    def signed_by_kept(request: httpx.Request, forward: Forward) -> httpx.Response:
        return _answer(statement_by(kept, json.loads(request.content)["store"], path))

    def pinned_while_it_served(profile: Profile) -> None:
        profile.pinned[kept.signing_key_id] = pin_of(kept, future())
        profile.keys_checked_at = format_utc(future(-1))  # stale: the lists are read again
        profile.save()

    transport.on("GET", "/v1/keys/rotator", listed)
    transport.on("POST", UPLOAD_KEYS, signed_by_kept)
    before = await world.event_ids()

    refused = await _refused_by_client(transport, tmp_path, path, pinned_while_it_served)

    table.add(
        "a statement signed by a retired key (client)",
        UNTRUSTED,
        failure(refused),
    )
    assert isinstance(refused, UntrustedKey)
    assert "no longer trusts" in refused.message
    assert not transport.reached("POST", SECRETS)
    await _nothing_changed(world, before, (VAULT, path))


async def test_a_key_for_a_store_the_client_did_not_ask_for_is_refused(
    world: World, table: AttackTable, tmp_path: Path
) -> None:
    path = new_path("retarget")
    other = await world.signed_key(AWS, path)  # real, for the store the server prefers
    transport = MaliciousApi(world)
    transport.on("POST", UPLOAD_KEYS, lambda request, forward: _answer(other))
    before = await world.event_ids()

    refused = await _refused_by_client(transport, tmp_path, path)

    table.add("the server chooses another store (client)", UNTRUSTED, failure(refused))
    assert isinstance(refused, UntrustedKey)
    assert f"you asked for {VAULT}:{path}" in refused.message
    assert not transport.reached("POST", SECRETS)
    await _nothing_changed(world, before, (VAULT, path), (AWS, path))


async def test_a_forged_outcome_receipt_is_not_taken_as_stored(
    world: World, table: AttackTable, tmp_path: Path
) -> None:
    path = new_path("receipt")
    real = await world.signed_key(VAULT, path)
    receipt_keys = (await world.api.call("GET", "/v1/keys/receipts")).json()["keys"]
    receipt_key_id = receipt_keys[0]["receipt_key_id"]
    transport = MaliciousApi(world)
    swallowed: list[dict[str, Any]] = []

    def swallow(request: httpx.Request, forward: Forward) -> httpx.Response:
        body = json.loads(request.content)
        swallowed.append(body)
        return _answer({"upload_id": body["upload_id"], "status": "pending", "status_url": ""}, 202)

    def claim_stored(request: httpx.Request, forward: Forward) -> httpx.Response:
        body = swallowed[-1]
        digest = hashlib.sha256(base64.b64decode(body["ciphertext"])).hexdigest()
        outcome = OutcomeReceipt(
            body["upload_id"], VAULT, path, "stored", "1", "fp1:" + "A" * 43, digest
        )
        forger = ReceiptSigningKey.generate(receipt_key_id)  # the pinned id, another key
        signature = base64.b64encode(sign_receipt(outcome, forger)).decode()
        view = {
            **outcome.to_dict(),
            "requested_by": "admin",
            "requested_at": format_utc(future(0)),
            "updated_at": format_utc(future(0)),
            "receipt": {"receipt_key_id": receipt_key_id, "signature": signature},
        }
        return _answer(view, 200)

    transport.on("POST", UPLOAD_KEYS, lambda request, forward: _answer(real))
    transport.on("POST", SECRETS, swallow)
    transport.on("GET", UPLOADS, claim_stored)
    before = await world.event_ids()

    check: ReceiptCheck = await asyncio.to_thread(_put, transport, tmp_path, path)

    got = f"receipt verified={check.verified}: {check.problem}"
    table.add("a forged outcome receipt (client)", "unverified (m8ctl exit 10), not 'Stored'", got)
    assert not check.verified
    assert check.problem is not None
    assert "does not verify" in check.problem
    await _nothing_changed(world, before, (VAULT, path))


# --- bodies the API cannot take -----------------------------------------------------------------


async def _upload_body(world: World, case: str) -> tuple[str, dict[str, Any]]:
    path = new_path(case)
    key = await world.api.issue_key(VAULT, path)
    return path, world.api.upload_body(key, secret_value())


@pytest.mark.parametrize(
    ("case", "expected", "status", "code"),
    [
        ("an oversize body (300 kB)", "413 payload_too_large", 413, "payload_too_large"),
        ("a malformed body (not JSON)", "422 validation_error", 422, "validation_error"),
        (
            "malformed fields (short nonce, bad base64)",
            "422 validation_error",
            422,
            "validation_error",
        ),
        (
            "a wrong content type (text/plain)",
            "415 unsupported_media_type",
            415,
            "unsupported_media_type",
        ),
    ],
)
async def test_a_body_the_api_cannot_take_is_refused(
    case: str, expected: str, status: int, code: str, world: World, table: AttackTable
) -> None:
    path, body = await _upload_body(world, code)
    content = json.dumps(body).encode()
    content_type = "application/json"
    if status == 413:
        content = json.dumps({**body, "padding": "A" * 300_000}).encode()
    elif "not JSON" in case:
        content = content[:-10]
    elif "fields" in case:
        content = json.dumps({**body, "nonce": "c2hvcnQ=", "ciphertext": "not base64!"}).encode()
    else:
        content_type = "text/plain"
    before = await world.event_ids()

    response = await world.api.call(
        "POST", SECRETS, who="alice", content=content, headers={"Content-Type": content_type}
    )

    table.add(case, expected, problem(response))
    assert_problem(response, status, code)
    assert "not base64!" not in response.text
    await _nothing_changed(world, before, (VAULT, path))


# --- who may call -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "case"),
    [
        ("missing", "a missing token"),
        ("expired", "an expired token (OIDC)"),
        ("audience", "a token for another audience (OIDC)"),
    ],
)
async def test_an_upload_without_a_valid_token_is_unauthorized(
    token: str, case: str, world: World, table: AttackTable
) -> None:
    path, body = await _upload_body(world, token)
    # Signed by the identity provider the API trusts, for an admin: only `exp` or `aud` is off.
    every: dict[str, dict[str, Any]] = {
        "missing": {},
        "expired": {"exp": int(time.time()) - 60},
        "audience": {"aud": "another-api"},
    }
    claims = every[token]
    signed = world.idp.token(realm_access={"roles": ["admin"]}, **claims)
    headers = {} if token == "missing" else {"Authorization": f"Bearer {signed}"}
    before = await world.event_ids()

    response = await world.api.client.post(SECRETS, json=body, headers=headers)

    table.add(case, "401 unauthorized", problem(response))
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith('Bearer realm="m8"')
    await _nothing_changed(world, before, (VAULT, path))


async def test_a_user_may_not_call_the_admins_store_operations(
    world: World, table: AttackTable
) -> None:
    before = await world.event_ids()

    deactivate = await world.api.call("POST", f"/v1/stores/{VAULT}/deactivate", who="alice")
    register = await world.api.call(
        "POST",
        "/v1/stores",
        who="alice",
        json={
            "type": "vault",
            "name": "mallory",
            "address": "https://x.example",
            "mount": "secret",
            "path_prefix": "m8/",
        },
    )

    table.add("a user deactivates a store (admin operation)", "403 forbidden", problem(deactivate))
    table.add("a user registers a store (admin operation)", "403 forbidden", problem(register))
    assert_problem(deactivate, 403, "forbidden")
    assert_problem(register, 403, "forbidden")
    stores = (await world.api.call("GET", "/v1/stores")).json()["stores"]
    assert VAULT in {s["name"] for s in stores}
    assert "mallory" not in {s["name"] for s in stores}
    assert await world.added_since(before) == []


async def test_a_user_may_not_write_outside_its_prefixes(world: World, table: AttackTable) -> None:
    path = f"team-b/outside-{uuid.uuid4().hex[:8]}"
    key = await world.api.issue_key(VAULT, path)
    before = await world.event_ids()

    asked = await world.api.call(
        "POST", UPLOAD_KEYS, who="alice", json={"store": VAULT, "path": path}
    )
    upload = await world.api.call(
        "POST", SECRETS, who="alice", json=world.api.upload_body(key, secret_value())
    )

    table.add("a user asks for a key outside its prefixes", "403 forbidden", problem(asked))
    table.add("a user writes outside its prefixes", "403 forbidden", problem(upload))
    assert_problem(asked, 403, "forbidden")
    assert_problem(upload, 403, "forbidden")
    await _nothing_changed(world, before, (VAULT, path))


async def test_a_user_may_not_read_outside_its_prefixes(world: World, table: AttackTable) -> None:
    path = f"team-b/db-{uuid.uuid4().hex[:8]}"
    key = await world.api.issue_key(VAULT, path)
    body = world.api.upload_body(key, secret_value())
    assert (await world.api.call("POST", SECRETS, json=body)).status_code == 202  # the admin's
    url = f"/v1/uploads/{body['upload_id']}?wait=30"
    assert (await world.api.call("GET", url)).json()["status"] == "stored"
    await world.key_destroyed(key.key_id, "used")
    before = await world.event_ids()

    shown = await world.api.call("GET", f"/v1/secrets/{VAULT}/{path}", who="alice")
    history = await world.api.call("GET", f"/v1/history/{VAULT}/{path}", who="alice")
    status = await world.api.call("GET", f"/v1/uploads/{body['upload_id']}", who="alice")

    table.add(
        "a user reads a secret outside its prefixes",
        "404 not_found (not even its existence)",
        problem(shown),
    )
    assert_problem(shown, 404, "not_found")
    assert_problem(history, 404, "not_found")
    assert_problem(status, 404, "not_found")
    assert (await world.api.call("GET", f"/v1/secrets/{VAULT}/{path}")).status_code == 200
    assert await world.added_since(before) == []
    assert world.versions(VAULT, path) == 1  # the admin's upload, nothing more


# --- a service's broker credentials -------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "event", "case"),
    [
        ("api", "SecretStored", "the API's broker user publishes a reactor's SecretStored"),
        (
            "reactor-vault",
            "SecretUploadRequested",
            "a reactor's broker user publishes an upload request",
        ),
    ],
)
async def test_a_service_may_not_publish_another_services_event(
    service: str, event: str, case: str, world: World, table: AttackTable
) -> None:
    path = new_path("publish")
    fields = {"upload_id": str(uuid.uuid4()), "store": VAULT, "store_type": "vault", "path": path}
    forged = (
        SecretStored(**fields, upstream_version="1", fingerprint="fp1:" + "A" * 43)
        if event == "SecretStored"
        else SecretUploadRequested(
            **fields,
            key_id="uk-forged",
            client_public_key=base64.b64encode(bytes(PrivateKey.generate().public_key)).decode(),
            nonce=base64.b64encode(bytes(24)).decode(),
            ciphertext=base64.b64encode(bytes(32)).decode(),
            ciphertext_sha256="0" * 64,
            requested_by="mallory",
        )
    )
    stored = StoredEvent.new("secret", secret_id(VAULT, path), 1, forged, MALLORY)
    before = await world.event_ids()

    with pytest.raises(ChannelAccessRefused) as refused:
        await world.publish_as(service, stored)

    table.add(case, "AMQP 403 ACCESS_REFUSED", failure(refused.value))
    assert "ACCESS_REFUSED" in str(refused.value)
    await _nothing_changed(world, before, (VAULT, path))
