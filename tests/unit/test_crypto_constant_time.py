"""Binding fields and fingerprints are compared in constant time (docs/security.md)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pytest

from m8.crypto.envelope import Binding, check_binding
from m8.crypto.errors import BindingMismatch
from m8.crypto.fingerprint import fingerprints_equal

Compare = Callable[[bytes, bytes], bool]


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every pair the crypto modules hand to hmac.compare_digest."""
    seen: list[tuple[bytes, bytes]] = []
    real: Compare = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        seen.append((bytes(a), bytes(b)))
        return real(a, b)

    # Both modules look the function up on the hmac module at each call.
    monkeypatch.setattr(hmac, "compare_digest", recording)
    return seen


BINDING = Binding("4a1c9a0e-4a2b-4c1d-8e2f-0a1b2c3d4e5f", "key-1", "vault-prod", "team/db")


def test_every_binding_field_is_compared_with_compare_digest(
    compared: list[tuple[bytes, bytes]],
) -> None:
    check_binding(BINDING, BINDING)
    assert compared == [
        (BINDING.upload_id.encode(),) * 2,
        (BINDING.key_id.encode(),) * 2,
        (BINDING.store_id.encode(),) * 2,
        (BINDING.path.encode(),) * 2,
    ]


def test_a_binding_mismatch_is_found_by_compare_digest_not_by_equality(
    compared: list[tuple[bytes, bytes]],
) -> None:
    other = Binding(BINDING.upload_id, BINDING.key_id, BINDING.store_id, "team/other")
    with pytest.raises(BindingMismatch):
        check_binding(other, BINDING)
    assert compared[-1] == (b"team/other", b"team/db")


def test_fingerprints_are_compared_with_compare_digest(
    compared: list[tuple[bytes, bytes]],
) -> None:
    assert fingerprints_equal("fp1:abc", "fp1:abc")
    assert not fingerprints_equal("fp1:abc", "fp1:abd")
    assert compared == [(b"fp1:abc", b"fp1:abc"), (b"fp1:abc", b"fp1:abd")]
