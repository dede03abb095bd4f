"""What a reactor process reads from its environment (prefix ``M8_REACTOR_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from m8.config import Settings
from m8.crypto import (
    CryptoError,
    FingerprintKey,
    KekRing,
    ReceiptKeyFile,
    read_fingerprint_key_file,
    read_kek_file,
    read_receipt_key_file,
)
from m8.reactors.retry import RetryPolicy
from m8.runtime import ConfigurationError


class ReactorSettings(Settings):
    """Keys, credentials and limits of one reactor process.

    The KEK files are the private halves of every live KEK of the reactor group (one store
    type), comma-separated; the fingerprint key is the same for every reactor of every
    type, so that equal values have equal fingerprints in all stores.
    """

    reactor_kek_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    reactor_fingerprint_key_file: Path | None = None
    # The reactor's own key for signing the outcomes it records (m8.crypto.receipts).
    reactor_receipt_key_file: Path | None = None
    # Upstream credentials per store name, each pinning where its store lives: a 0600
    # JSON file, or the same JSON in the env. The format is in credentials.py.
    reactor_credentials_file: Path | None = None
    reactor_credentials: SecretStr | None = None
    # DEVELOPMENT ONLY (m8 dev, tests): also serve stores that have no credentials entry,
    # at VAULT_ADDR / AWS_ENDPOINT_URL. Off, a store without an entry gets nothing.
    reactor_dev_unpinned_stores: bool = False
    reactor_concurrency: int = Field(default=8, ge=1)
    reactor_upstream_threads: int = Field(default=8, ge=1)
    reactor_upstream_timeout: float = Field(default=10.0, gt=0)
    # The default waits ~47 s between attempts: upstream may be away that long.
    reactor_retry_attempts: int = Field(default=10, ge=1)
    reactor_retry_backoff: float = Field(default=0.5, gt=0)
    reactor_retry_max_backoff: float = Field(default=8.0, gt=0)
    # How long a delivery waits for its path (another upload of it being written) before
    # it goes back to the end of its queue, uncounted (m8.reactors.reactor.PATH_WAIT).
    reactor_path_wait_seconds: float = Field(default=5.0, gt=0)
    # The operations port: /metrics, /healthz and /readyz (m8.health); 0: none. On every
    # interface by default (as before there was a host setting): 127.0.0.1 keeps it local.
    reactor_metrics_port: int = Field(default=0, ge=0, le=65535)
    reactor_metrics_host: str = "0.0.0.0"

    @field_validator("reactor_kek_files", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def kek_ring(self) -> KekRing:
        """The live KEKs, read from their 0600 files."""
        if not self.reactor_kek_files:
            raise ConfigurationError(
                "M8_REACTOR_KEK_FILES is not set: give the KEK private key files of this "
                "reactor group, comma-separated"
            )
        try:
            return KekRing(read_kek_file(path) for path in self.reactor_kek_files)
        except CryptoError as exc:
            raise ConfigurationError(str(exc)) from None

    def fingerprint_key(self) -> FingerprintKey:
        """The fingerprint key, read from its 0600 file."""
        if self.reactor_fingerprint_key_file is None:
            raise ConfigurationError(
                "M8_REACTOR_FINGERPRINT_KEY_FILE is not set: every reactor needs the "
                "fingerprint key file"
            )
        try:
            return read_fingerprint_key_file(self.reactor_fingerprint_key_file)
        except CryptoError as exc:
            raise ConfigurationError(str(exc)) from None

    def receipt_key(self) -> ReceiptKeyFile:
        """The receipt key, read from its 0600 file."""
        if self.reactor_receipt_key_file is None:
            raise ConfigurationError(
                "M8_REACTOR_RECEIPT_KEY_FILE is not set: a reactor signs every outcome it "
                "records; make its key with `m8 keys generate-receipt-key --id ID --out FILE`"
            )
        try:
            return read_receipt_key_file(self.reactor_receipt_key_file)
        except CryptoError as exc:
            raise ConfigurationError(str(exc)) from None

    def retry_policy(self) -> RetryPolicy:
        """How often and how patiently transient upstream errors are retried."""
        return RetryPolicy(
            attempts=self.reactor_retry_attempts,
            backoff=self.reactor_retry_backoff,
            max_backoff=self.reactor_retry_max_backoff,
        )
