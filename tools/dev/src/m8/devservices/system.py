"""The whole of m8 on one machine: local servers, keys, the services, a store per type.

Every store type with a local server (m8.stores: its DevServer) gets that server, a
reactor and a store `<type>-dev` on it. `m8 dev` runs this in the foreground; `m8 dev
demo` uses the state it leaves in `.m8/system.json` to put one value into every store.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from m8 import stores
from m8.crypto import (
    FingerprintKey,
    Kek,
    ReceiptKeyFile,
    ReceiptSigningKey,
    write_key_file,
    write_receipt_key_file,
)
from m8.crypto.keyfiles import write_private_file
from m8.devservices.manager import (
    ServiceError,
    Services,
    free_port,
    http_ok,
    log_tail,
    pid_alive,
    spawn,
    stop_process,
    tool,
    wait_until,
)
from m8.devservices.vhosts import management, provision
from m8.stores import StoreType

SYSTEM_FILE = "system.json"


def dev_store(store_type: str) -> str:
    """The name of the store `m8 dev` registers for a store type: `vault-dev`."""
    return f"{store_type}-dev"


def dev_types() -> tuple[StoreType, ...]:
    """The store types `m8 dev` runs: those with a local server, the first the default."""
    return tuple(t for t in stores.all_types() if t.dev is not None)


VAULT_STORE = dev_store("vault")
AWS_STORE = dev_store("aws")


@dataclass
class DevKeys:
    """Key files of a local system, made once under `.m8/keys`."""

    directory: Path

    def kek(self, store_type: str) -> tuple[Path, Path]:
        return (
            self.directory / f"{store_type}-dev.kek.json",
            self.directory / f"{store_type}-dev.pub.json",
        )

    @property
    def master(self) -> Path:
        return self.directory / "rotator-master.key.json"

    @property
    def fingerprint(self) -> Path:
        return self.directory / "fingerprint.key.json"

    def receipt(self, store_type: str) -> Path:
        """The receipt key of one reactor, `receipt-<store_type>-dev`: its own, not shared."""
        return self.directory / f"receipt-{store_type}-dev.key.json"

    def ensure(self) -> None:
        """Writes every key file that is missing (0600 for private halves)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for store_type in stores.names():
            private, public = self.kek(store_type)
            if not private.exists():
                kek = Kek.generate(f"{store_type}-dev")
                write_key_file(private, kek)
                write_key_file(public, kek.public, overwrite=True)
        if not self.master.exists():
            write_key_file(self.master, Kek.generate("rotator-master-dev"))
        if not self.fingerprint.exists():
            write_key_file(self.fingerprint, FingerprintKey.generate())
        for store_type in stores.names():
            if not self.receipt(store_type).exists():
                key = ReceiptSigningKey.generate(f"receipt-{store_type}-dev")
                write_receipt_key_file(self.receipt(store_type), ReceiptKeyFile(key))


@dataclass
class System:
    """The running services of a local m8, and how to reach them."""

    workdir: Path
    api_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def admin_token_file(self) -> Path:
        return self.workdir / "admin.token"

    def environments(self, services: Services, keys: DevKeys) -> dict[str, dict[str, str]]:
        """What each service reads: only its own keys, tokens and credentials."""
        token_file = self.workdir / "tokens.json"
        admin = secrets.token_urlsafe(32)
        write_private_file(self.admin_token_file, admin + "\n", overwrite=True)
        digest = hashlib.sha256(admin.encode()).hexdigest()
        entry = {"sha256": digest, "subject": "dev-admin", "roles": ["admin"]}
        write_private_file(token_file, json.dumps({"tokens": [entry]}, indent=2), overwrite=True)
        # The reactors' own credentials, each pinned to its store's upstream address,
        # exactly as register_stores registers them: a reactor serves a store only as its
        # entry describes it.
        credentials = self.workdir / "reactor-credentials.json"
        entries = {dev_store(t.name): _dev_entry(t, services) for t in dev_types()}
        write_private_file(credentials, json.dumps(entries, indent=2), overwrite=True)
        common = {
            "M8_AMQP_URL": services["rabbitmq"].url,
            "M8_MONGODB_URI": services["mongodb"].url,
            "M8_LOG_FORMAT": "json",
        }
        reactor = {
            **common,
            "M8_REACTOR_FINGERPRINT_KEY_FILE": str(keys.fingerprint),
            "M8_REACTOR_CREDENTIALS_FILE": str(credentials),
        }
        kek_files = {t.name: [str(keys.kek(t.name)[1])] for t in dev_types()}
        environments = {
            # The OpenAPI pages are off in production; a developer wants them.
            "api": {**common, "M8_API_TOKEN_FILE": str(token_file), "M8_API_PUBLIC_DOCS": "true"},
            "keyrotator": {
                **common,
                "M8_KEYROTATOR_MASTER_KEY_FILE": str(keys.master),
                "M8_KEYROTATOR_KEK_FILES": json.dumps(kek_files),
            },
        }
        for store_type in dev_types():
            assert store_type.dev is not None  # dev_types() has only those with one
            environments[f"reactor-{store_type.name}"] = {
                **reactor,
                "M8_REACTOR_KEK_FILES": str(keys.kek(store_type.name)[0]),
                "M8_REACTOR_RECEIPT_KEY_FILE": str(keys.receipt(store_type.name)),
                # Prometheus metrics, a port of each reactor's own.
                "M8_REACTOR_METRICS_PORT": str(free_port()),
                # A developer's own (AWS_ACCESS_KEY_ID, say) win over the dev server's.
                **{
                    name: os.environ.get(name, value)
                    for name, value in store_type.dev.reactor_environment.items()
                },
            }
        return environments

    def start(self, services: Services, overrides: dict[str, str] | None = None) -> None:
        """Starts api, keyrotator and a reactor per store type, and waits until the API is
        ready.

        `overrides` replace environment variables of all of them (tests give each run a
        RabbitMQ virtual host and a database of its own this way).
        """
        keys = DevKeys(self.workdir / "keys")
        keys.ensure()
        environments = self.environments(services, keys)
        amqp_urls = _broker_users(services, (overrides or {}).get("M8_AMQP_URL"))
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        m8 = tool("m8")
        commands = {
            "api": [m8, "api", "--port", str(port)],
            "keyrotator": [m8, "keyrotator"],
            **{f"reactor-{t.name}": [m8, "reactor", t.name] for t in dev_types()},
        }
        for name, argv in commands.items():
            env = {**environments[name], **(overrides or {}), "M8_AMQP_URL": amqp_urls[name]}
            proc, _log = spawn(name, argv, self.workdir, env, inherit=_not_ours)
            self.pids[name] = proc.pid
        if not wait_until(
            lambda: all(map(pid_alive, self.pids.values())) and http_ok(f"{self.api_url}/readyz"),
            90,
        ):
            logs = "".join(
                f"\n{name}:{log_tail(str(self.workdir / 'logs' / f'{name}.log'))}"
                for name in commands
            )
            self.stop()
            raise ServiceError(f"m8 did not come up; the services' logs:{logs}")
        try:
            self.register_stores(services)
        except httpx.HTTPError as exc:
            self.stop()
            raise ServiceError(f"could not register the dev stores: {exc}") from None
        self.save()

    def register_stores(self, services: Services) -> None:
        """A store per type, each on its local server (idempotent)."""
        bodies = [
            {"type": t.name, "name": dev_store(t.name), **_dev_config(t, services)}
            for t in dev_types()
        ]
        token = self.admin_token_file.read_text().strip()
        with httpx.Client(base_url=self.api_url, timeout=30) as http:
            known = {
                s["name"] for s in http.get("/v1/stores", headers=_auth(token)).json()["stores"]
            }
            for body in bodies:
                if body["name"] not in known:
                    http.post("/v1/stores", json=body, headers=_auth(token)).raise_for_status()

    def stop(self) -> None:
        """Stops the services (SIGTERM, then SIGKILL after a grace period)."""
        for pid in self.pids.values():
            stop_process(pid, timeout=20)
        self.pids.clear()
        (self.workdir / SYSTEM_FILE).unlink(missing_ok=True)

    def save(self) -> None:
        (self.workdir / SYSTEM_FILE).write_text(
            json.dumps({"api_url": self.api_url, "pids": self.pids})
        )

    @classmethod
    def load(cls, workdir: Path) -> System:
        """The system `m8 dev` runs now, or ServiceError."""
        try:
            raw = json.loads((workdir / SYSTEM_FILE).read_text())
        except FileNotFoundError:
            raise ServiceError("m8 is not running here: start it with `make run`") from None
        return cls(workdir, raw["api_url"], raw["pids"])


def _dev_config(store_type: StoreType, services: Services) -> dict[str, Any]:
    """The config of a type's dev store: on the local server `services` run for it."""
    dev = store_type.dev
    assert dev is not None  # dev_types() has only those with one
    return {**dev.config, dev.address_field: services[dev.server].url}


def _dev_entry(store_type: StoreType, services: Services) -> dict[str, Any]:
    """The reactors' credentials entry of a type's dev store, with the server's login."""
    dev = store_type.dev
    assert dev is not None  # dev_types() has only those with one
    entry = _dev_config(store_type, services)
    if dev.login_field is not None:
        entry[dev.login_field] = services[dev.server].extra.get("token", "")
    return entry


def _broker_users(services: Services, amqp_url: str | None) -> dict[str, str]:
    """Each service's AMQP URL, on a RabbitMQ user of its own with only its own rights, in
    the virtual host of `amqp_url` (deleted with it, or left without rights after it)."""
    try:
        with management(services["rabbitmq"]) as api:
            return provision(api, amqp_url or services["rabbitmq"].url, secrets.token_hex(3))
    except httpx.HTTPError as exc:
        raise ServiceError(f"could not make the services' RabbitMQ users: {exc}") from None


def _not_ours(name: str) -> bool:
    # A developer's shell may hold tokens and keys: a service gets only what it needs.
    return not name.startswith(("M8_", "VAULT_", "BAO_", "AWS_"))


def _receipt_keys_published(system: System) -> bool:
    """Whether the API lists the receipt key of every dev reactor."""
    wanted = {f"receipt-{t.name}-dev" for t in dev_types()}
    token = system.admin_token_file.read_text().strip()
    try:
        answer = httpx.get(f"{system.api_url}/v1/keys/receipts", headers=_auth(token), timeout=10)
        keys = answer.json()["keys"] if answer.is_success else []
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    return wanted <= {str(key.get("receipt_key_id")) for key in keys if isinstance(key, dict)}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def m8ctl_login(system: System, config: Path) -> None:
    """Logs a dev m8ctl profile in as the dev admin (token by file, never by argument).

    Its store is named, the first type's (`vault-dev`): a profile never takes the server's
    default on trust.
    """
    token = str(system.admin_token_file)
    default = dev_store(dev_types()[0].name)
    # Login pins the receipt keys published then, and only an endorsed successor is
    # followed later: wait for every reactor's (the API is ready before they are).
    if not wait_until(lambda: _receipt_keys_published(system), 120):
        raise ServiceError("the reactors did not publish their receipt keys within 120 s")
    done = subprocess.run(
        [tool("m8ctl"), "login", system.api_url, "--token-file", token, "--store", default],
        env={**os.environ, "M8CTL_CONFIG": str(config)},
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ServiceError(f"m8ctl login failed: {done.stderr.strip()}")
