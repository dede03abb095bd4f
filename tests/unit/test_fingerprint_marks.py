"""Fingerprints go upstream sealed unless a store shows them: opaque, and only for reactors."""

from __future__ import annotations

import re

import pytest

from m8.crypto import FingerprintKey, fingerprint, new_upload_id
from m8.stores.adapters import FingerprintMarks

KEY = FingerprintKey.generate()
FP = fingerprint(b"s3cr3t", KEY)
# What an AWS tag value may hold, and how long it may be.
AWS_TAG_VALUE = re.compile(r"[\w.:/=+\-@ ]{0,256}")


def test_sealed_marks_of_one_fingerprint_compare_nothing_and_open_for_their_upload() -> None:
    marks, upload = FingerprintMarks(KEY, in_clear=False), new_upload_id()
    first, second = marks.mark(FP, upload), marks.mark(FP, upload)
    assert first != second
    assert FP not in first
    assert FP.removeprefix("fp1:") not in first
    assert AWS_TAG_VALUE.fullmatch(first)
    assert marks.read(first, upload) == FP
    assert marks.read(second, upload) == FP


@pytest.mark.parametrize("in_clear", [False, True])
def test_a_mark_opens_for_no_other_upload_key_or_text(in_clear: bool) -> None:
    upload = new_upload_id()
    mark = FingerprintMarks(KEY, in_clear=False).mark(FP, upload)
    marks = FingerprintMarks(KEY, in_clear=in_clear)
    assert marks.read(mark, new_upload_id()) is None  # copied onto another upload
    assert FingerprintMarks(FingerprintKey.generate(), in_clear=False).read(mark, upload) is None
    assert marks.read(mark[:-4] + "AAAA", upload) is None
    assert marks.read("fps1:!!", upload) is None
    assert marks.read("something else", upload) is None
    assert marks.read(None, upload) is None


def test_store_that_shows_fingerprints_writes_them_plain_and_reads_them_back() -> None:
    upload = new_upload_id()
    marks = FingerprintMarks(KEY, in_clear=True)
    assert marks.mark(FP, upload) == FP
    assert marks.read(FP, upload) == FP
    # A mark sealed before the store was set to show fingerprints still opens.
    assert marks.read(FingerprintMarks(KEY, in_clear=False).mark(FP, upload), upload) == FP


def test_a_sealed_store_ignores_plain_marks_which_any_metadata_writer_could_choose() -> None:
    upload, sealed = new_upload_id(), FingerprintMarks(KEY, in_clear=False)
    plain = FingerprintMarks(KEY, in_clear=True).mark(FP, upload)

    assert sealed.read(plain, upload) is None
    assert sealed.read("fp1:chosen-by-whoever-wrote-the-metadata", upload) is None
    assert sealed.read(sealed.mark(FP, upload), upload) == FP


def test_sealing_without_the_fingerprint_key_is_refused() -> None:
    with pytest.raises(ValueError, match="fingerprint key"):
        FingerprintMarks(None, in_clear=False)
