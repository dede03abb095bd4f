"""A reactor's keys and patience come from M8_REACTOR_* variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m8.crypto import FingerprintKey, Kek, write_key_file
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError


def test_several_kek_files_make_one_ring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old, new = Kek.generate("kek-1"), Kek.generate("kek-2")
    files = [write_key_file(tmp_path / f"{k.kek_id}.json", k) for k in (old, new)]
    monkeypatch.setenv("M8_REACTOR_KEK_FILES", f"{files[0]}, {files[1]}")
    ring = ReactorSettings().kek_ring()
    assert [kek.kek_id for kek in ring] == ["kek-1", "kek-2"]


def test_a_reactor_without_kek_files_says_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match="M8_REACTOR_KEK_FILES"):
        ReactorSettings(reactor_kek_files=[]).kek_ring()


def test_fingerprint_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "fp.json", FingerprintKey.generate())
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        ReactorSettings(reactor_fingerprint_key_file=path).fingerprint_key()


def test_default_retry_policy_rides_out_a_20_second_upstream_outage() -> None:
    assert ReactorSettings().retry_policy().patience() >= 30


def test_small_retry_budget_gives_up_soon() -> None:
    settings = ReactorSettings(reactor_retry_attempts=3, reactor_retry_backoff=0.1)
    assert settings.retry_policy().patience() == pytest.approx(0.3)
