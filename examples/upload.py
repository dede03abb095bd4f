"""Uploading a secret from a Python program with m8's SDK (the m8-client distribution).

The program makes a new database password and hands it to m8: no shell, no value in an
argument or the environment. It uses the m8ctl profile made once by `m8ctl login` (in
`$M8CTL_CONFIG`, else ~/.config/m8/m8ctl.json): its server, token, store and the rotator and
receipt keys it pinned, which the SDK checks exactly as m8ctl does.

    python upload.py team/db/password
"""

import secrets
import sys
from typing import Any

from m8.client.outcome import await_outcome, check_receipt
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.client.upload import put_secret, read_value


def upload(
    path: str, value: bytes, store: str | None = None, timeout: float = 120
) -> dict[str, Any]:
    """Encrypts `value` for `path` and waits for its outcome, checked against the reactor's
    receipt; returns the outcome (status, upstream version, fingerprint)."""
    profile = Profile.load()
    with M8Client(profile.server, profile.token) as client:
        sent = put_secret(client, profile, path, store, read_value(value))
        outcome = await_outcome(client, sent["upload_id"], timeout)
        if outcome["status"] == "pending":
            raise TimeoutError(f"upload {sent['upload_id']} still pending after {timeout} s")
        receipt = check_receipt(
            client,
            profile,
            outcome,
            sent["upload_id"],
            sent["store"],
            path,
            sent["ciphertext_sha256"],
        )
    if not receipt.verified:
        raise RuntimeError(
            f"upload {sent['upload_id']}: outcome not vouched for: {receipt.problem}"
        )
    return outcome


if __name__ == "__main__":
    password = secrets.token_urlsafe(32).encode()
    result = upload(sys.argv[1], password)
    print(result["status"], result.get("upstream_version"), result.get("fingerprint"))
    sys.exit(0 if result["status"] == "stored" else 1)
