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
        path = path or default_path()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotLoggedIn("not logged in: run `m8ctl login SERVER_URL` first") from None
        except (OSError, ValueError) as exc:
            raise ClientError(f"cannot read {path}: {exc}; run `m8ctl login` again") from None
        if path.stat().st_mode & 0o077:
            raise ClientError(f"{path} is readable by others; run `chmod 600 {path}`")
        return cls(
            server=raw["server"],
            token=raw["token"],
            pinned={k: PinnedKey(**v) for k, v in raw.get("pinned", {}).items()},
        )

    def save(self, path: Path | None = None) -> Path:
        """Writes the profile readable by its owner only."""
        path = path or default_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {
                    "server": self.server,
                    "token": self.token,
                    "pinned": {k: asdict(v) for k, v in self.pinned.items()},
                },
                out,
                indent=2,
            )
        os.replace(temporary, path)
        return path
