"""A person puts secrets through m8ctl into the running system."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import uuid
from pathlib import Path

import hvac.exceptions
import pytest
from pymongo import AsyncMongoClient

from m8.client.profile import PinnedKey, Profile
from m8.client.sdk import M8Client
from m8.client.upload import put_secret
from m8.crypto import RotatorSigningKey, SecretBytes, encode_verify_key
from m8.devservices.manager import tool
from m8.devservices.system import AWS_STORE, VAULT_STORE
from tests.e2e.conftest import RunningSystem
from tests.e2e.support import aws_value, m8ctl, put_json, vault_value
from tests.support.events import eventually
from tests.support.uploads import secret_value


def new_path() -> str:
    return f"e2e/{uuid.uuid4().hex[:10]}/password"


def test_same_value_into_both_stores_lands_upstream_with_equal_fingerprints(
    system: RunningSystem,
) -> None:
    value, path = secret_value(), new_path()
    in_vault = put_json(system, path, VAULT_STORE, value)
    in_aws = put_json(system, path, AWS_STORE, value)
    assert in_vault["status"] == in_aws["status"] == "stored"
    assert vault_value(system.services, path) == value
    assert aws_value(system.services, path) == value
    assert in_vault["fingerprint"].startswith("fp1:")
    assert in_vault["fingerprint"] == in_aws["fingerprint"]


def test_secret_put_prints_the_fingerprint_for_a_person(system: RunningSystem) -> None:
    done = m8ctl(system, "secret", "put", new_path(), "-o", "table", stdin=secret_value())
    assert done.returncode == 0, done.stderr
    assert "fingerprint fp1:" in done.stdout
    assert "Stored" in done.stdout
    assert done.stderr == ""  # no terminal: no stages, no spinner


def test_a_piped_secret_put_prints_its_outcome_as_one_tab_separated_line(
    system: RunningSystem,
) -> None:
    path = new_path()
    done = m8ctl(system, "secret", "put", path, stdin=secret_value())
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    outcome = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert (outcome["status"], outcome["receipt_verified"]) == ("stored", "true")
    assert outcome["path"] == path
    assert outcome["fingerprint"].startswith("fp1:")
    assert done.stderr == ""


def test_a_stored_secret_is_shown_listed_and_its_history_told_whole_through_a_pipe(
    system: RunningSystem,
) -> None:
    path = new_path().replace("/password", "/" + "a-rather-long-segment/" * 4 + "password")
    stored = put_json(system, path, AWS_STORE, secret_value())
    shown = m8ctl(system, "secret", "show", path, "--store", AWS_STORE)
    listed = m8ctl(system, "secret", "list", "--prefix", path)
    history = m8ctl(system, "secret", "history", path, "--store", AWS_STORE, "-o", "json")
    old_form = m8ctl(system, "secret", "show", AWS_STORE, path)
    assert shown.returncode == listed.returncode == history.returncode == 0
    fields = dict(line.split("\t") for line in shown.stdout.splitlines())
    assert fields["path"] == path
    assert fields["fingerprint"] == stored["fingerprint"]
    header, row = listed.stdout.splitlines()
    assert dict(zip(header.split("\t"), row.split("\t"), strict=True))["path"] == path
    [entry] = json.loads(history.stdout)["history"]
    assert entry["upload_id"] == stored["upload_id"]
    assert old_form.returncode == 2
    assert f"secret show {path} --store {AWS_STORE}" in " ".join(old_form.stderr.split())


def test_value_from_a_file_is_put_exactly(system: RunningSystem, tmp_path: Path) -> None:
    value, path = secret_value() + b"\n\x00binary-tail", new_path()
    file = tmp_path / "value.bin"
    file.write_bytes(value)
    done = m8ctl(system, "secret", "put", path, "--file", str(file), "--json")
    assert done.returncode == 0, done.stderr
    # Not UTF-8 text: the Vault adapter stores it base64-encoded; check via fingerprints.
    again = put_json(system, new_path(), AWS_STORE, value)
    assert json.loads(done.stdout)["fingerprint"] == again["fingerprint"]


def test_value_typed_at_a_hidden_prompt_is_put(system: RunningSystem) -> None:
    value, path = secret_value(), new_path()
    pid, terminal = pty.fork()  # m8ctl gets a real terminal, as a person's shell gives it
    if pid == 0:  # the child: becomes m8ctl
        os.execve(tool("m8ctl"), ["m8ctl", "secret", "put", path], system.m8ctl_env())  # noqa: S606
    screen = b""
    for _ in range(2):  # the value, then its confirmation
        screen += _read_until(terminal, b": ")
        os.write(terminal, value + b"\n")
    screen += _read_all(terminal)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, screen.decode(errors="replace")
    assert value not in screen  # hidden input is not echoed
    assert b"fingerprint fp1:" in screen
    assert vault_value(system.services, path) == value


def _read_until(fd: int, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"no prompt; the terminal showed {seen!r}"
        seen += os.read(fd, 1024)
    return seen


def _read_all(fd: int) -> bytes:
    seen = b""
    while select.select([fd], [], [], 120)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


async def test_after_the_upload_its_key_is_destroyed_and_its_ciphertext_redacted(
    system: RunningSystem,
) -> None:
    outcome = put_json(system, new_path(), VAULT_STORE, secret_value())
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(system.services["mongodb"].url)
    db = client[system.database]
    request = await db["events"].find_one(
        {"type": "SecretUploadRequested", "data.upload_id": outcome["upload_id"]}
    )
    assert request is not None
    key_id = request["data"]["key_id"]  # type: ignore[index]

    async def destroyed_and_redacted() -> bool:
        event = await db["events"].find_one({"_id": request["_id"]})
        destroyed = await db["events"].find_one(
            {"type": "UploadKeyDestroyed", "aggregate_id": key_id}
        )
        return bool(destroyed) and event is not None and event["data"]["ciphertext"] is None  # type: ignore[index]

    await eventually(destroyed_and_redacted, timeout=30)
    assert await db["upload_keys"].find_one({"_id": key_id}) is None
    redacted = await db["events"].find_one({"_id": request["_id"]})
    assert redacted is not None
    assert len(redacted["data"]["ciphertext_sha256"]) == 64  # type: ignore[index]
    await client.close()


def test_an_upload_key_cannot_serve_a_second_upload(system: RunningSystem) -> None:
    profile = Profile.load(system.m8ctl_config)
    path = new_path()
    with M8Client(profile.server, profile.token) as client:
        statement = client.upload_key(path, VAULT_STORE)
        sent: list[dict[str, object]] = []

        class Twice(M8Client):
            def upload_key(self, path: str, store: str | None) -> dict[str, object]:
                return statement

            def submit(self, body: dict[str, object]) -> dict[str, object]:
                sent.append(body)
                return super().submit(body)

        twice = Twice(profile.server, profile.token)
        with SecretBytes(secret_value()) as value:
            put_secret(twice, profile, path, VAULT_STORE, value)
        with pytest.raises(Exception, match="used"), SecretBytes(secret_value()) as value:
            put_secret(twice, profile, path, VAULT_STORE, value)
        twice.close()
    assert len(sent) == 2


def test_tampered_upload_is_rejected_and_nothing_is_written(system: RunningSystem) -> None:
    profile = Profile.load(system.m8ctl_config)
    path = new_path()
    with M8Client(profile.server, profile.token) as client:

        class Tampering(M8Client):
            def submit(self, body: dict[str, object]) -> dict[str, object]:
                raw = bytearray(base64.b64decode(str(body["ciphertext"])))
                raw[len(raw) // 2] ^= 0x01
                return super().submit({**body, "ciphertext": base64.b64encode(raw).decode()})

        tampering = Tampering(profile.server, profile.token)
        with SecretBytes(secret_value()) as value:
            accepted = put_secret(tampering, profile, path, VAULT_STORE, value)
        tampering.close()
        del client
    done = m8ctl(system, "upload", "status", accepted["upload_id"], "--wait", "60")
    assert done.returncode == 3, done.stderr
    assert "rejected" in done.stderr
    assert "bad_mac" in done.stderr
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault_value(system.services, path)


def test_a_changed_rotator_key_is_refused_and_nothing_is_sent(
    system: RunningSystem, tmp_path: Path
) -> None:
    profile = Profile.load(system.m8ctl_config)
    impostor = RotatorSigningKey.generate("impostor")
    for key_id in profile.pinned:
        profile.pinned[key_id] = PinnedKey(encode_verify_key(impostor.verify_key), "changed")
    config = tmp_path / "m8ctl.json"
    profile.save(config)
    env = {**system.m8ctl_env(), "M8CTL_CONFIG": str(config)}
    path = new_path()
    done = m8ctl(system, "secret", "put", path, stdin=secret_value(), env=env)
    assert done.returncode == 7
    assert "nothing was sent" in done.stderr


def test_an_inactive_store_takes_no_upload(system: RunningSystem) -> None:
    add = m8ctl(
        system, "stores", "add", "vault", "vault-off",
        "--address", system.services["openbao"].url, "--path-prefix", "off/",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert m8ctl(system, "stores", "deactivate", "vault-off").returncode == 0
    done = m8ctl(system, "secret", "put", new_path(), "--store", "vault-off", stdin=b"v")
    assert done.returncode == 1
    assert "inactive" in done.stderr


def test_an_unknown_token_is_refused(system: RunningSystem, tmp_path: Path) -> None:
    profile = Profile.load(system.m8ctl_config)
    profile.token = "not-a-token"
    config = tmp_path / "m8ctl.json"
    profile.save(config)
    env = {**system.m8ctl_env(), "M8CTL_CONFIG": str(config)}
    done = m8ctl(system, "secret", "put", new_path(), stdin=b"v", env=env)
    assert done.returncode == 5
    assert "401" in done.stderr or "nauthori" in done.stderr


def test_no_secret_value_appears_in_any_service_log(system: RunningSystem) -> None:
    value = secret_value()
    put_json(system, new_path(), VAULT_STORE, value)
    put_json(system, new_path(), AWS_STORE, value)
    logs = "".join(p.read_text() for p in (system.system.workdir / "logs").glob("*.log"))
    assert value.decode() not in logs
    assert base64.b64encode(value).decode() not in logs
