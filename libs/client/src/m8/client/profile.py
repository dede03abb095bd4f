"""m8ctl's saved login: server, token, the user's store and the pinned keys (a 0600 file).

Plain data only: PyNaCl is not loaded here, so `m8ctl --help` stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from m8.client.errors import ClientError, NotLoggedIn

ROTATOR = "rotator"
RECEIPT = "receipt"


def default_path() -> Path:
    """`$M8CTL_CONFIG`, else `$XDG_CONFIG_HOME/m8/m8ctl.json`."""
    if configured := os.environ.get("M8CTL_CONFIG"):
        return Path(configured)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "m8" / "m8ctl.json"


@dataclass
class PinnedKey:
    """A verify key this client trusts, until `not_after` (fixed when pinned, never extended)."""

    verify_key: str
    fingerprint: str
    not_after: str | None = None  # ISO-8601 UTC; receipt keys have none
    successor: str | None = None  # the one key this key endorsed, once seen


@dataclass
class DroppedKey:
    """A key this client trusted once and never will again, and why."""

    reason: str
    at: str


@dataclass
class PinSet:
    """The pinned and dropped keys of one kind (rotator signing keys or receipt keys)."""

    kind: str
    pinned: dict[str, PinnedKey] = field(default_factory=dict)
    dropped: dict[str, DroppedKey] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pinned": {k: asdict(v) for k, v in self.pinned.items()},
            "dropped": {k: asdict(v) for k, v in self.dropped.items()},
        }

    @classmethod
    def from_dict(cls, kind: str, raw: dict[str, Any]) -> PinSet:
        return cls(
            kind,
            {k: PinnedKey(**v) for k, v in raw.get("pinned", {}).items()},
            {k: DroppedKey(**v) for k, v in raw.get("dropped", {}).items()},
        )


@dataclass
class Profile:
    """Where the server is, how to authenticate, where uploads go, and which keys to trust."""

    server: str
    token: str = field(repr=False)
    store: str | None = None  # the user's own store: m8ctl always names it, never the server
    rotator_keys: PinSet = field(default_factory=lambda: PinSet(ROTATOR))
    receipt_keys: PinSet = field(default_factory=lambda: PinSet(RECEIPT))
    keys_checked_at: str | None = None  # when the published key lists were last read
    path: Path | None = field(default=None, repr=False, compare=False)  # where it was loaded

    @property
    def pinned(self) -> dict[str, PinnedKey]:
        """The pinned rotator keys."""
        return self.rotator_keys.pinned

    @classmethod
    def load(cls, path: Path | None = None) -> Profile:
        """The saved profile, or NotLoggedIn."""
        # Imported here: loading PyNaCl would slow every m8ctl start, `--help` included.
        from m8.crypto.errors import InsecureKeyFile, KeyFileError
        from m8.crypto.keyfiles import read_private_file

        path = path or default_path()
        if not path.exists():
            raise NotLoggedIn("not logged in: run `m8ctl login SERVER_URL` first")
        try:
            raw = json.loads(read_private_file(path))
            # Profiles written before receipts and dropped keys existed load as they were.
            rotator = {"pinned": raw.get("pinned", {}), "dropped": raw.get("dropped", {})}
            return cls(
                server=raw["server"],
                token=raw["token"],
                store=raw.get("store"),
                rotator_keys=PinSet.from_dict(ROTATOR, rotator),
                receipt_keys=PinSet.from_dict(RECEIPT, raw.get("receipt_keys", {})),
                keys_checked_at=raw.get("keys_checked_at"),
                path=path,
            )
        except InsecureKeyFile:
            raise ClientError(f"{path} is readable by others; run `chmod 600 {path}`") from None
        except (KeyFileError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ClientError(f"cannot read {path}: {exc}; run `m8ctl login` again") from None

    def save(self, path: Path | None = None) -> Path:
        """Writes the profile readable by its owner only (where it was loaded from, by default)."""
        from m8.crypto.keyfiles import write_private_file

        path = path or self.path or default_path()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {
            "server": self.server,
            "token": self.token,
            "store": self.store,
            "keys_checked_at": self.keys_checked_at,
            **self.rotator_keys.to_dict(),
            "receipt_keys": self.receipt_keys.to_dict(),
        }
        return write_private_file(path, json.dumps(document, indent=2), overwrite=True)
