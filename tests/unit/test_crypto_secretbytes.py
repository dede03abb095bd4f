"""SecretBytes: a holder that hides and wipes its content."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m8.crypto import SecretBytes, SecretWiped


@settings(max_examples=100, deadline=None)
@given(value=st.binary(max_size=256))
def test_repr_and_str_never_show_the_content(value: bytes) -> None:
    secret = SecretBytes(value)

    # The exact text is fixed, so it cannot depend on (or leak) the value.
    assert repr(secret) == str(secret) == f"{secret}" == "SecretBytes(<redacted>)"
    assert repr([secret]) == "[SecretBytes(<redacted>)]"


def test_wipe_zeroes_the_buffer_in_place() -> None:
    buffer = bytearray(b"secret value")
    secret = SecretBytes.adopt(buffer)

    secret.wipe()

    assert buffer == bytes(len(b"secret value"))
    assert secret.wiped
    assert repr(secret) == "SecretBytes(<wiped>)"


def test_a_view_reads_zeros_after_the_wipe() -> None:
    secret = SecretBytes(b"abc")
    view = secret.view()

    secret.wipe()

    assert view.tobytes() == b"\x00\x00\x00"


def test_leaving_the_with_block_wipes() -> None:
    with SecretBytes(b"abc") as secret:
        assert secret.reveal() == b"abc"

    assert secret.wiped
    with pytest.raises(SecretWiped):
        secret.reveal()


def test_a_wiped_secret_cannot_be_read_compared_or_measured() -> None:
    secret = SecretBytes(b"abc")
    secret.wipe()

    with pytest.raises(SecretWiped):
        secret.view()
    with pytest.raises(SecretWiped):
        len(secret)
    with pytest.raises(SecretWiped):
        _ = secret == b"abc"


def test_it_refuses_pickling_copying_and_bytes() -> None:
    secret = SecretBytes(b"abc")

    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        copy.copy(secret)
    with pytest.raises(TypeError):
        copy.deepcopy(secret)
    with pytest.raises(TypeError):
        bytes(secret)


def test_it_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(SecretBytes(b"abc"))


def test_equality_compares_content() -> None:
    assert SecretBytes(b"abc") == b"abc"
    assert SecretBytes(b"abc") == SecretBytes(b"abc")
    assert SecretBytes(b"abc") != b"abd"
    assert SecretBytes(b"abc") != "abc"


def test_the_copy_it_is_built_from_is_independent() -> None:
    source = bytearray(b"abc")
    secret = SecretBytes(source)

    secret.wipe()

    assert source == b"abc"
