"""What the domain refuses, as specific exceptions (mapped to HTTP in one place, the API)."""

from __future__ import annotations


class DomainError(Exception):
    """A command the domain refuses; `detail` says what to do about it."""

    code = "domain_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidPath(DomainError):
    code = "invalid_path"


class UnknownStore(DomainError):
    code = "unknown_store"


class StoreAlreadyRegistered(DomainError):
    code = "store_exists"


class StoreInactive(DomainError):
    code = "store_inactive"


class NoDefaultStore(DomainError):
    code = "no_default_store"


class DefaultStoreInUse(DomainError):
    code = "default_store_in_use"


class UploadAlreadyRequested(DomainError):
    code = "upload_exists"


class UnknownUpload(DomainError):
    code = "unknown_upload"


class UnknownUploadKey(DomainError):
    code = "unknown_upload_key"


class UploadKeyUsed(DomainError):
    code = "upload_key_used"


class UploadKeyExpired(DomainError):
    code = "upload_key_expired"


class UploadKeyDestroyed(DomainError):
    code = "upload_key_destroyed"


class UploadKeyMismatch(DomainError):
    code = "upload_key_mismatch"
