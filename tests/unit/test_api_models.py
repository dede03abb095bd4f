"""The shape checks of request bodies, and the ciphertext size limit they use."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from nacl.public import PrivateKey
from pydantic import ValidationError

from m8.api.models import KEY_ID_MAX, UploadIn, max_ciphertext_bytes
from m8.crypto import MAX_VALUE_BYTES, Binding, seal_envelope


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(**changes: Any) -> dict[str, Any]:
    return {
        "upload_id": "9b2f3c1e-0000-4000-8000-000000000000",
        "key_id": "k-1",
        "client_public_key": b64(bytes(32)),
        "nonce": b64(bytes(24)),
        "ciphertext": b64(bytes(100)),
        "path": "team/db",
        **changes,
    }


def test_the_largest_possible_upload_fits_and_a_longer_text_does_not() -> None:
    binding = Binding("0" * 36, "k" * KEY_ID_MAX, "s" * 63, "p" * 256)
    largest = seal_envelope(bytes(MAX_VALUE_BYTES), binding, PrivateKey.generate().public_key)

    assert len(largest.ciphertext) == max_ciphertext_bytes()
    UploadIn.model_validate(body(ciphertext=b64(largest.ciphertext)))
    with pytest.raises(ValidationError, match="ciphertext"):
        # One more group of base64: the rounding up to whole groups leaves no more room.
        UploadIn.model_validate(body(ciphertext=b64(largest.ciphertext + b"xxx")))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client_public_key", b64(bytes(31))),
        ("nonce", b64(bytes(25))),
        ("ciphertext", b64(bytes(16))),  # a MAC and nothing else
        ("ciphertext", "AAAA="),
        ("nonce", b64(bytes(24)).rstrip("=") + " "),
        ("path", "a/../b"),
        ("store", "Not_A_Store"),
        ("upload_id", "9B2F3C1E-0000-4000-8000-000000000000"),
    ],
)
def test_a_malformed_field_is_named_without_its_value(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        UploadIn.model_validate(body(**{field: value}))

    errors = refused.value.errors(include_input=False, include_context=False)
    assert [e["loc"] for e in errors] == [(field,)]
    for error in errors:
        assert value not in error["msg"]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="value"):
        UploadIn.model_validate(body(value="plaintext by mistake"))
