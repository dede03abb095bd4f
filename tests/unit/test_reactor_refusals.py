"""Why an envelope is refused is recorded as a fixed reason, with the field in the detail."""

from __future__ import annotations

import pytest

from m8.crypto import (
    CryptoError,
    DecryptionFailed,
    KeyIdMismatch,
    MalformedEnvelope,
    PathMismatch,
    StoreMismatch,
    UploadIdMismatch,
)
from m8.reactors.reactor import rejection


@pytest.mark.parametrize(
    ("error", "field"),
    [
        (UploadIdMismatch(), "upload_id"),
        (KeyIdMismatch(), "key_id"),
        (StoreMismatch(), "store_id"),
        (PathMismatch(), "path"),
    ],
)
def test_binding_mismatch_names_the_field(error: CryptoError, field: str) -> None:
    refused = rejection(error)
    assert refused.reason == "binding_mismatch"
    assert field in refused.detail


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DecryptionFailed("the upload does not decrypt"), "bad_mac"),
        (MalformedEnvelope("nonce must be 24 bytes"), "malformed_envelope"),
    ],
)
def test_other_crypto_errors_have_their_own_reason(error: CryptoError, reason: str) -> None:
    assert rejection(error).reason == reason
