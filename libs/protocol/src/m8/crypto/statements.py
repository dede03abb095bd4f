"""Signed upload key statements: how m8ctl knows an upload key really comes from the rotator.

The rotator signs ``{key_id, public_key, store_id, path, expires_at, kek_id}``; m8ctl
checks the signature against the rotator verify keys it pinned at login, so the API (or
anyone between) cannot hand it a key of their own (ADR-3 #SEC2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from nacl.signing import VerifyKey

from m8.crypto.encoding import (
    b64decode,
    b64encode,
    canonical_json,
    check_text,
    format_utc,
    parse_utc,
    require_fields,
    require_str,
)
from m8.crypto.errors import (
    InvalidInput,
    MalformedStatement,
    StatementExpired,
    UnknownSigningKey,
)
from m8.crypto.signing import RotatorSigningKey, check_signature

# Prepended before signing so a statement signature can never be valid for any other
# kind of message the same key might sign later.
STATEMENT_CONTEXT = b"m8-upload-key-statement-v1\x00"
_PUBLIC_KEY_BYTES = 32
_STATEMENT_FIELDS = frozenset({"key_id", "public_key", "store_id", "path", "expires_at", "kek_id"})
_SIGNED_FIELDS = frozenset({"statement", "signing_key_id", "signature"})


@dataclass(frozen=True, slots=True)
class UploadKeyStatement:
    """What the rotator vouches for about one upload key."""

    key_id: str
    public_key: bytes
    store_id: str
    path: str
    expires_at: datetime
    kek_id: str

    def __post_init__(self) -> None:
        for name in ("key_id", "store_id", "path", "kek_id"):
            check_text(getattr(self, name), field=name)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != _PUBLIC_KEY_BYTES:
            raise InvalidInput(f"public_key must be {_PUBLIC_KEY_BYTES} bytes")
        # Normalise to the instant the canonical form can express, so that
        # from_dict(to_dict(s)) == s and the signed bytes never depend on how it was built.
        object.__setattr__(self, "expires_at", _canonical_time(self.expires_at))

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form: public_key standard base64, expires_at ISO-8601 UTC."""
        return {
            "key_id": self.key_id,
            "public_key": b64encode(self.public_key),
            "store_id": self.store_id,
            "path": self.path,
            "expires_at": format_utc(self.expires_at),
            "kek_id": self.kek_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> UploadKeyStatement:
        """Inverse of :meth:`to_dict`; :class:`MalformedStatement` on bad input."""
        data = require_fields(data, _STATEMENT_FIELDS, what="statement", error=MalformedStatement)
        try:
            return cls(
                key_id=require_str(data, "key_id", error=MalformedStatement),
                public_key=b64decode(
                    data["public_key"], field="public_key", error=MalformedStatement
                ),
                store_id=require_str(data, "store_id", error=MalformedStatement),
                path=require_str(data, "path", error=MalformedStatement),
                expires_at=parse_utc(
                    data["expires_at"], field="expires_at", error=MalformedStatement
                ),
                kek_id=require_str(data, "kek_id", error=MalformedStatement),
            )
        except InvalidInput as exc:
            raise MalformedStatement(str(exc)) from None

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed: context, then canonical JSON."""
        return STATEMENT_CONTEXT + canonical_json(self.to_dict())

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the key may no longer be used at ``now`` (default: the current time)."""
        return _canonical_time(now or datetime.now(UTC)) >= self.expires_at


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """A statement with the rotator's signature and the id of the key that made it."""

    statement: UploadKeyStatement
    signing_key_id: str
    signature: bytes

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, signature standard base64."""
        return {
            "statement": self.statement.to_dict(),
            "signing_key_id": self.signing_key_id,
            "signature": b64encode(self.signature),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SignedStatement:
        """Inverse of :meth:`to_dict`; :class:`MalformedStatement` on bad input."""
        data = require_fields(
            data, _SIGNED_FIELDS, what="signed statement", error=MalformedStatement
        )
        statement = data["statement"]
        if not isinstance(statement, dict):
            raise MalformedStatement("statement must be a JSON object")
        return cls(
            statement=UploadKeyStatement.from_dict(statement),
            signing_key_id=require_str(data, "signing_key_id", error=MalformedStatement),
            signature=b64decode(data["signature"], field="signature", error=MalformedStatement),
        )


def sign_statement(
    statement: UploadKeyStatement, signing_key: RotatorSigningKey
) -> SignedStatement:
    """Sign ``statement`` with the rotator's key."""
    signature = signing_key.signing_key.sign(statement.canonical_bytes()).signature
    return SignedStatement(
        statement=statement, signing_key_id=signing_key.signing_key_id, signature=signature
    )


def verify_statement(
    signed: SignedStatement,
    verify_keys: Mapping[str, VerifyKey],
    *,
    now: datetime | None = None,
) -> UploadKeyStatement:
    """The statement if a pinned key signed it and it has not expired.

    Raises :class:`UnknownSigningKey`, :class:`BadSignature` or :class:`StatementExpired`
    (checked against ``now``, default the current time).
    """
    check_signature(
        verify_keys,
        signed.signing_key_id,
        signed.statement.canonical_bytes(),
        signed.signature,
        unknown=UnknownSigningKey,
        what="the upload key statement",
        signer="rotator key",
    )
    if signed.statement.is_expired(now):
        raise StatementExpired(f"upload key {signed.statement.key_id!r} has expired")
    return signed.statement


def _canonical_time(moment: datetime) -> datetime:
    # Round trip through the canonical text: refuses naive times, converts to UTC.
    return parse_utc(format_utc(moment), field="time", error=InvalidInput)
