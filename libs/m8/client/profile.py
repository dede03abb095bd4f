"""m8ctl's saved login: server, token and the pinned rotator verify keys (a 0600 file)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from m8.client.errors import ClientError, NotLoggedIn


def default_path() -> Path:
    """`$M8CTL_CONFIG`, else `$XDG_CONFIG_HOME/m8/m8ctl.json`."""
    if configured := os.environ.get("M8CTL_CONFIG"):
        return Path(configured)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "m8" / "m8ctl.json"


@dataclass
class PinnedKey:
    """A rotator verify key this client trusts."""

    verify_key: str
    fingerprint: str


@dataclass
class Profile:
    """Where the server is, how to authenticate, and which rotator keys to trust."""

    server: str
    token: str = field(repr=False)
    pinned: dict[str, PinnedKey] = field(default_factory=dict)

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
        except InsecureKeyFile:
            raise ClientError(f"{path} is readable by others; run `chmod 600 {path}`") from None
        except (KeyFileError, ValueError) as exc:
            raise ClientError(f"cannot read {path}: {exc}; run `m8ctl login` again") from None
        return cls(
            server=raw["server"],
            token=raw["token"],
            pinned={k: PinnedKey(**v) for k, v in raw.get("pinned", {}).items()},
        )

    def save(self, path: Path | None = None) -> Path:
        """Writes the profile readable by its owner only."""
        from m8.crypto.keyfiles import write_private_file

        path = path or default_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {
            "server": self.server,
            "token": self.token,
            "pinned": {k: asdict(v) for k, v in self.pinned.items()},
        }
        return write_private_file(path, json.dumps(document, indent=2), overwrite=True)
