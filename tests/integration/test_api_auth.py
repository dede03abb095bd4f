"""Who may call the API: tokens from a token file, and OIDC JWTs checked against a JWKS."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import (
    AWS_STORE,
    TOKENS,
    VAULT_STORE,
    RunningApi,
    api_settings,
    auth,
    running_api,
)
from tests.support.events import eventually

ISSUER = "https://id.example.com/realms/m8"
AUDIENCE = "m8-api"


@dataclass(frozen=True)
class IdentityProvider:
    """A signing key whose public half a real HTTP server publishes as a JWKS."""

    key: rsa.RSAPrivateKey
    jwks_url: str

    def token(self, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "iat": now, "exp": now + 300}
        payload.update(claims)
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[IdentityProvider]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield IdentityProvider(key, f"http://127.0.0.1:{server.server_port}/jwks")
    server.shutdown()


@pytest.fixture
async def api(
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    tmp_path: Path,
    identity_provider: IdentityProvider,
) -> AsyncIterator[RunningApi]:
    settings = api_settings(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        oidc_jwks_url=identity_provider.jwks_url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_roles_claim="realm_access.roles",
    )
    async with running_api(settings) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_request_without_a_valid_token_is_unauthorized(api: RunningApi) -> None:
    missing = await api.client.get("/v1/stores")
    wrong = await api.client.get("/v1/stores", headers=bearer("not-a-known-token"))
    basic = await api.client.get("/v1/stores", headers={"Authorization": "Basic YTpi"})

    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == 'Bearer realm="m8"'
    assert wrong.headers["www-authenticate"] == 'Bearer realm="m8", error="invalid_token"'
    assert "not-a-known-token" not in wrong.text


async def test_a_caller_without_a_role_is_forbidden(api: RunningApi) -> None:
    response = await api.client.get("/v1/stores", headers=auth("nobody"))

    assert response.status_code == 403
    assert "nobody" in response.json()["detail"]


async def test_a_user_may_ask_for_keys_only_under_its_prefixes(api: RunningApi) -> None:
    response = await api.call(
        "POST", "/v1/upload-keys", who="alice", json={"store": "vault-a", "path": "team-b/x"}
    )

    assert response.status_code == 403
    assert "team-a/" in response.json()["detail"]


async def test_a_toml_token_file_works_like_a_json_one(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    digest = hashlib.sha256(TOKENS["admin"].encode()).hexdigest()
    toml = tmp_path / "tokens.toml"
    toml.write_text(f'[[tokens]]\nsha256 = "{digest}"\nsubject = "root"\nroles = ["admin"]\n')
    settings = api_settings(broker, services, mongo_db_name, tmp_path, api_token_file=toml)

    async with running_api(settings) as api:
        response = await api.call("POST", "/v1/stores", json=AWS_STORE)

    assert response.status_code == 201


async def test_an_oidc_admin_may_change_the_catalog_and_its_name_is_recorded(
    api: RunningApi, identity_provider: IdentityProvider
) -> None:
    token = identity_provider.token(realm_access={"roles": ["admin", "offline_access"]})

    response = await api.client.post("/v1/stores", headers=bearer(token), json=AWS_STORE)

    assert response.status_code == 201
    [registered, *_] = await api.recorder.load("secret_store", "catalog")
    assert registered.metadata.actor == "carol"


async def test_an_oidc_user_is_held_to_its_role_and_prefixes(
    api: RunningApi, identity_provider: IdentityProvider
) -> None:
    await api.add_store(AWS_STORE)
    token = identity_provider.token(
        realm_access={"roles": ["user"]}, m8_prefixes=["team-c"], m8_stores=["*"]
    )

    listed = await api.client.get("/v1/stores", headers=bearer(token))
    register = await api.client.post("/v1/stores", headers=bearer(token), json=VAULT_STORE)
    outside = await api.client.post(
        "/v1/upload-keys", headers=bearer(token), json={"path": "team-cc/x"}
    )

    assert listed.status_code == 200
    assert register.status_code == 403
    assert outside.status_code == 403


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 60},
        {"aud": "another-api"},
        {"iss": "https://evil.example.com"},
    ],
    ids=["expired", "wrong-audience", "wrong-issuer"],
)
async def test_an_oidc_token_that_is_not_for_us_is_unauthorized(
    api: RunningApi, identity_provider: IdentityProvider, claims: dict[str, Any]
) -> None:
    token = identity_provider.token(realm_access={"roles": ["admin"]}, **claims)

    response = await api.client.get("/v1/stores", headers=bearer(token))

    assert response.status_code == 401


async def test_an_oidc_token_signed_by_another_key_is_unauthorized(
    api: RunningApi, identity_provider: IdentityProvider
) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = identity_provider.token(key=forger, realm_access={"roles": ["admin"]})

    response = await api.client.get("/v1/stores", headers=bearer(token))

    assert response.status_code == 401


async def test_an_oidc_prefixes_claim_of_one_string_is_one_prefix_not_any_path(
    api: RunningApi, identity_provider: IdentityProvider
) -> None:
    await api.add_store(AWS_STORE)
    token = identity_provider.token(
        realm_access={"roles": ["user"]}, m8_prefixes="team-c", m8_stores="*"
    )

    outside = await api.client.post(
        "/v1/upload-keys", headers=bearer(token), json={"path": "team-d/x"}
    )

    assert outside.status_code == 403
    assert "allowed prefixes: team-c" in outside.json()["detail"]


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"m8_prefixes": 42}, "m8_prefixes"),
        ({"m8_prefixes": None}, "m8_prefixes"),
        ({"m8_prefixes": {"team-a/": True}}, "m8_prefixes"),
        ({"m8_prefixes": ["team-a/", 7]}, "m8_prefixes"),
        ({"realm_access": {"roles": {"admin": True}}}, "realm_access.roles"),
        ({"realm_access": {"roles": 1}}, "realm_access.roles"),
        ({"realm_access": ["admin"]}, "realm_access.roles"),
    ],
    ids=[
        "prefixes-number",
        "prefixes-null",
        "prefixes-object",
        "prefixes-mixed-list",
        "roles-object",
        "roles-number",
        "roles-parent-not-an-object",
    ],
)
async def test_an_oidc_claim_of_the_wrong_type_is_unauthorized_never_any_path(
    api: RunningApi, identity_provider: IdentityProvider, claims: dict[str, Any], named: str
) -> None:
    token = identity_provider.token(**{"realm_access": {"roles": ["user"]}, **claims})

    response = await api.client.get("/v1/secrets", headers=bearer(token))

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert repr(named) in response.json()["detail"]


class JwksServer:
    """A real HTTP server publishing a JWKS on 127.0.0.1, counting the fetches; it can be
    told to fail (500) or to hang until it is stopped."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
        self.fetches = 0
        self.mode = "ok"
        self.released = threading.Event()
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.fetches += 1
                if served.mode == "hang":
                    served.released.wait(timeout=30)
                if served.mode != "ok":
                    self.send_response(500)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(jwks_key: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    server = JwksServer(jwks_key)
    yield server
    server.stop()


def _oidc_api(
    broker: Broker,
    services: Services,
    database: str,
    directory: Path,
    jwks: JwksServer,
    **overrides: Any,
) -> contextlib.AbstractAsyncContextManager[RunningApi]:
    settings = api_settings(
        broker,
        services,
        database,
        directory,
        oidc_jwks_url=jwks.url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        **overrides,
    )
    return running_api(settings)


def _token(key: rsa.RSAPrivateKey, kid: str = "k1") -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "exp": now + 300, "roles": "user"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


async def test_tokens_naming_unknown_keys_fetch_the_jwks_at_most_once_per_interval(
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    tmp_path: Path,
    jwks: JwksServer,
    jwks_key: rsa.RSAPrivateKey,
) -> None:
    async with _oidc_api(broker, services, mongo_db_name, tmp_path, jwks) as api:
        known = await api.client.get("/v1/stores", headers=bearer(_token(jwks_key)))
        unknown = [
            await api.client.get("/v1/stores", headers=bearer(_token(jwks_key, f"kid-{n}")))
            for n in range(100)
        ]

    assert known.status_code == 200
    assert {response.status_code for response in unknown} == {401}
    assert jwks.fetches == 1


async def test_an_identity_provider_that_fails_is_asked_at_most_once_per_interval(
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    tmp_path: Path,
    jwks: JwksServer,
    jwks_key: rsa.RSAPrivateKey,
) -> None:
    jwks.mode = "fail"
    async with _oidc_api(broker, services, mongo_db_name, tmp_path, jwks) as api:
        answers = [
            await api.client.get("/v1/stores", headers=bearer(_token(jwks_key, kid)))
            for kid in ["k1", *(f"kid-{n}" for n in range(99))]
        ]

    assert {answer.status_code for answer in answers} == {503}
    assert all(answer.headers["retry-after"] for answer in answers)
    assert jwks.fetches == 1


async def test_a_failed_jwks_fetch_keeps_the_keys_it_had(
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    tmp_path: Path,
    jwks: JwksServer,
    jwks_key: rsa.RSAPrivateKey,
) -> None:
    # Keys are stale at once and may be fetched again every 50 ms.
    fast = {"oidc_jwks_refetch_seconds": 0.05, "oidc_jwks_max_age_seconds": 0.05}
    async with _oidc_api(broker, services, mongo_db_name, tmp_path, jwks, **fast) as api:
        token = _token(jwks_key)
        assert (await api.client.get("/v1/stores", headers=bearer(token))).status_code == 200
        jwks.mode = "fail"
        answers: list[int] = []

        async def refetch_failed() -> bool:
            response = await api.client.get("/v1/stores", headers=bearer(token))
            answers.append(response.status_code)
            return jwks.fetches >= 3

        await eventually(refetch_failed, timeout=10)

    assert set(answers) == {200}


async def test_a_jwks_server_that_hangs_is_given_up_on_after_the_timeout(
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    tmp_path: Path,
    jwks: JwksServer,
    jwks_key: rsa.RSAPrivateKey,
) -> None:
    jwks.mode = "hang"
    async with _oidc_api(
        broker, services, mongo_db_name, tmp_path, jwks, oidc_jwks_timeout_seconds=0.5
    ) as api:
        started = time.monotonic()
        response = await api.client.get("/v1/stores", headers=bearer(_token(jwks_key)))
        took = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert took < 5


async def test_an_oidc_token_without_the_prefixes_or_stores_claim_may_write_nothing(
    api: RunningApi, identity_provider: IdentityProvider
) -> None:
    await api.add_store(AWS_STORE)
    no_prefixes = identity_provider.token(realm_access={"roles": ["user"]}, m8_stores="*")
    no_stores = identity_provider.token(realm_access={"roles": ["user"]}, m8_prefixes="*")

    answers = [
        await api.client.post(
            "/v1/upload-keys", headers=bearer(token), json={"store": "aws-b", "path": "x"}
        )
        for token in (no_prefixes, no_stores)
    ]

    assert [answer.status_code for answer in answers] == [403, 403]
