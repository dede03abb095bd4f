"""m8's domain: plain Python, no drivers. Events, aggregates and their rules."""

from m8.domain import events
from m8.domain.errors import DomainError
from m8.domain.paths import check_path, secret_id
from m8.domain.secrets import Secret, Upload
from m8.domain.stores import CATALOG_ID, Store, StoreCatalog
from m8.domain.upload_keys import KeyRefusal, KeyRefused, UploadKey

__all__ = [
    "CATALOG_ID",
    "DomainError",
    "KeyRefusal",
    "KeyRefused",
    "Secret",
    "Store",
    "StoreCatalog",
    "Upload",
    "UploadKey",
    "check_path",
    "events",
    "secret_id",
]
