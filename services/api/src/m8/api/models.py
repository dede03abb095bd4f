"""What goes over HTTP: request and response bodies (pydantic, at the edge only)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from nacl.bindings.crypto_box import crypto_box_MACBYTES
from nacl.public import PrivateKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator

from m8 import stores
from m8.api.patterns import PATH_PATTERN, base64_min_pattern, base64_pattern
from m8.crypto import Binding, MalformedEnvelope, seal_envelope
from m8.crypto.encoding import b64decode
from m8.crypto.envelope import MAX_VALUE_BYTES, NONCE_BYTES, PUBLIC_KEY_BYTES
from m8.domain import check_path
from m8.domain.errors import InvalidPath
from m8.domain.paths import MAX_PATH_LENGTH, STORE_NAME
from m8.protocol.status import UploadStage, UploadStatus
from m8.stores import StoreType

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
STORE_PATTERN = f"^{STORE_NAME.pattern}$"
KEY_ID_MAX = 64
KEY_ID_PATTERN = rf"^[A-Za-z0-9._-]{{1,{KEY_ID_MAX}}}$"


@cache
def max_ciphertext_bytes() -> int:
    """The largest ciphertext m8ctl can make: a maximal value in a maximal envelope.

    Measured by sealing one, so it follows the envelope format in m8.crypto.envelope.
    """
    binding = Binding(
        upload_id="0" * 36, key_id="k" * KEY_ID_MAX, store_id="s" * 63, path="p" * MAX_PATH_LENGTH
    )
    sealed = seal_envelope(bytes(MAX_VALUE_BYTES), binding, PrivateKey.generate().public_key)
    return len(sealed.ciphertext)


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def secret_path(path: str) -> str:
    """The domain's path rule (m8.domain.paths) as a pydantic validator."""
    try:
        return check_path(path)
    except InvalidPath as exc:
        raise ValueError(exc.detail) from None


StoreName = Annotated[str, Field(pattern=STORE_PATTERN, examples=["prod-vault"])]
SecretPath = Annotated[
    str,
    Field(
        max_length=MAX_PATH_LENGTH,
        # In the document only: the validator's messages say what is wrong in words.
        json_schema_extra={"pattern": PATH_PATTERN},
        examples=["team-a/db/password"],
    ),
    AfterValidator(secret_path),
]


class Strict(BaseModel):
    """A request body: unknown fields are refused, so nothing unexpected slips through."""

    model_config = ConfigDict(extra="forbid")


# --- stores ----------------------------------------------------------------------


def store_in_model(store_type: StoreType) -> type[BaseModel]:
    """The body that registers a store of `store_type`: its type, its name, its config."""
    literal: Any = Literal[store_type.name]
    model: type[BaseModel] = create_model(
        f"{store_type.name.title()}StoreIn",
        __base__=store_type.config,
        __doc__=store_type.config.__doc__,
        type=(literal, ...),
        name=(StoreName, ...),
    )
    return model


def store_in() -> Any:
    """The body of POST /v1/stores: the model of one registered store type, by `type`."""
    models = tuple(store_in_model(store_type) for store_type in stores.all_types())
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


# The store types registered when the API starts (m8.stores).
if TYPE_CHECKING:
    StoreIn = Any
else:
    StoreIn = store_in()


class StoreView(BaseModel):
    name: str
    type: str
    active: bool
    default: bool
    config: dict[str, str | bool | None]


class StoreList(BaseModel):
    stores: list[StoreView]
    default: str | None


# --- upload keys ---------------------------------------------------------------------


class UploadKeyRequest(Strict):
    """Ask for a one-time upload key for `path` in `store` (the default store if omitted)."""

    store: StoreName | None = None
    path: SecretPath


class Statement(BaseModel):
    key_id: str
    public_key: str
    store_id: str
    path: str
    expires_at: str
    kek_id: str


class SignedStatementView(BaseModel):
    """The rotator's signed statement, exactly as signed: verify it before using the key."""

    statement: Statement
    signing_key_id: str
    signature: str


class VerifyKey(BaseModel):
    signing_key_id: str
    verify_key: str
    fingerprint: str
    created_at: str
    # Optional only so that a rotator of the release before still answers; m8ctl refuses
    # a key without them.
    not_after: str | None = Field(
        default=None, description="fixed when the key was made: it signs nothing that outlives it"
    )
    self_signature: str | None = Field(
        default=None, description="the key's own signature over its id and not_after, base64"
    )
    retires_at: str | None = None
    endorsed_by: str | None = Field(
        default=None, description="the key that vouches for this one (and its not_after)"
    )
    endorsement: str | None = Field(default=None, description="its signature, base64")


class WithdrawnVerifyKey(BaseModel):
    signing_key_id: str
    withdrawn_at: str


class VerifyKeys(BaseModel):
    keys: list[VerifyKey]
    withdrawn: list[WithdrawnVerifyKey] = Field(
        default_factory=list, description="keys the rotator no longer signs with: unpin them"
    )


# --- uploads -----------------------------------------------------------------------


def _decoded(text: str, field: str) -> bytes:
    try:
        return b64decode(text, field=field, error=MalformedEnvelope)
    except MalformedEnvelope as exc:
        raise ValueError(str(exc)) from None


class UploadIn(Strict):
    """An encrypted upload (DESIGN 2, step 3); bytes are standard base64 with padding."""

    upload_id: str = Field(pattern=UUID_PATTERN, description="made by the client (uuid4)")
    key_id: str = Field(pattern=KEY_ID_PATTERN)
    # The patterns state the byte lengths in the OpenAPI document only; the validators
    # below enforce them (strict decoding), with messages that say what is wrong.
    client_public_key: str = Field(
        max_length=_base64_length(PUBLIC_KEY_BYTES),
        json_schema_extra={"pattern": base64_pattern(PUBLIC_KEY_BYTES)},
    )
    nonce: str = Field(
        max_length=_base64_length(NONCE_BYTES),
        json_schema_extra={"pattern": base64_pattern(NONCE_BYTES)},
    )
    ciphertext: str = Field(
        max_length=_base64_length(max_ciphertext_bytes()),
        json_schema_extra={"pattern": base64_min_pattern(crypto_box_MACBYTES + 1)},
    )
    store: StoreName | None = None
    path: SecretPath

    @field_validator("client_public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        if len(_decoded(value, "client_public_key")) != PUBLIC_KEY_BYTES:
            raise ValueError(f"client_public_key must be {PUBLIC_KEY_BYTES} bytes")
        return value

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, value: str) -> str:
        if len(_decoded(value, "nonce")) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        return value

    @field_validator("ciphertext")
    @classmethod
    def _ciphertext(cls, value: str) -> str:
        size = len(_decoded(value, "ciphertext"))
        # Up to what the longest base64 text allowed holds (the largest ciphertext rounded
        # up to whole 3-byte groups), so the document's maxLength is the whole rule; the
        # reactor refuses an envelope whose value is over MAX_VALUE_BYTES.
        largest = 3 * (_base64_length(max_ciphertext_bytes()) // 4)
        if not crypto_box_MACBYTES < size <= largest:
            raise ValueError(
                f"ciphertext must be {crypto_box_MACBYTES + 1} to {max_ciphertext_bytes()} "
                f"bytes (a value of at most {MAX_VALUE_BYTES} bytes in its envelope)"
            )
        return value


class UploadAccepted(BaseModel):
    upload_id: str
    status: Literal["pending"] = "pending"
    status_url: str


class ReceiptKey(BaseModel):
    """A reactor's receipt verify key: pin it, and check every outcome's receipt against it."""

    receipt_key_id: str
    verify_key: str = Field(description="Ed25519 public key, base64")
    fingerprint: str
    endorsed_by: str | None = Field(
        default=None, description="the receipt key that vouches for this one after a rotation"
    )
    endorsement: str | None = Field(default=None, description="its signature, base64")


class ReceiptKeys(BaseModel):
    keys: list[ReceiptKey]


class UploadReceipt(BaseModel):
    """The reactor's signature over the outcome (m8.crypto.verify_receipt checks it)."""

    receipt_key_id: str
    signature: str = Field(description="Ed25519 signature, base64")


class UploadView(BaseModel):
    """Where an upload stands. `failed` waits for an operator to re-drive it."""

    upload_id: str
    status: UploadStatus
    store: str
    path: str
    requested_by: str
    requested_at: datetime
    updated_at: datetime
    fingerprint: str | None = None
    upstream_version: str | None = None
    reason: str | None = None
    detail: str | None = None
    receipt: UploadReceipt | None = Field(
        default=None, description="who recorded the outcome; null while pending"
    )
    ciphertext_sha256: str | None = Field(
        default=None,
        description=(
            "lowercase hex SHA-256 of the ciphertext uploaded, as the receipt signs it; "
            "null only for a just-accepted upload not yet in the read model"
        ),
    )
    stage: UploadStage | None = Field(
        default=None,
        description=(
            "where a pending upload is, for display (null once it is no longer pending, "
            "and when it cannot be read): `accepted` (recorded, not yet handed to the "
            "broker), `queued` (handed to the broker, no reactor holds the path for it; "
            "an upload the read model has is taken as handed over, which is not so for a "
            "moment after the read model is rebuilt), `waiting` (another pending upload "
            "holds the path first), `writing` (a reactor holds the path for it: it is "
            "writing it upstream, or it stopped and its lease has not run out yet). Read "
            "when the answer is made, so it may lag behind; only `status`, and a receipt "
            "that verifies, say what happened"
        ),
    )


# --- secrets (metadata only: never a value or a ciphertext) ----------------------------


class SecretView(BaseModel):
    """A secret as m8 knows it: where it is and the fingerprint of its current value."""

    store: str
    path: str
    fingerprint: str | None
    upstream_version: str | None
    stored_at: datetime | None
    stored_by: str | None
    updated_at: datetime


class SecretList(BaseModel):
    secrets: list[SecretView]
    next_after: str | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )


class HistoryEntry(BaseModel):
    upload_id: str
    status: Literal["pending", "stored", "rejected", "superseded", "failed"]
    fingerprint: str | None
    upstream_version: str | None
    requested_by: str
    requested_at: datetime
    completed_at: datetime | None


class SecretHistory(BaseModel):
    store: str
    path: str
    history: list[HistoryEntry]


# --- operations ------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, Literal["ok"]]


# --- the caller --------------------------------------------------------------------------


class MeView(BaseModel):
    """Who the token is, and where it may upload (and read what m8 knows of it)."""

    subject: str
    roles: list[Literal["admin", "user"]] = Field(description="sorted; admin may do everything")
    stores: list[str] = Field(
        description="the active stores this caller may upload to now, sorted (admins: all)"
    )
    prefixes: list[str] = Field(
        description=(
            'the path prefixes this caller may write under; ["*"]: every path, []: none. '
            '"team-a" covers team-a and what is under team-a/; "team-a/" only what is under it'
        ),
        examples=[["team-a/"]],
    )
