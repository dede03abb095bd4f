"""Settings come from M8_* variables and honour the tools' own conventional ones."""

from __future__ import annotations

import pytest

from m8.config import Settings


def test_conventional_variables_point_m8_at_real_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example:8200")
    monkeypatch.setenv("VAULT_TOKEN", "t0k")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localstack:4566")
    monkeypatch.setenv("M8_MONGODB_URI", "mongodb://db/?replicaSet=rs0")
    settings = Settings()
    assert settings.vault_addr == "https://vault.example:8200"
    assert settings.vault_token is not None
    assert settings.vault_token.get_secret_value() == "t0k"
    assert "t0k" not in repr(settings)
    assert settings.aws_endpoint_url == "http://localstack:4566"
    assert settings.mongodb_uri == "mongodb://db/?replicaSet=rs0"


def test_m8_prefix_wins_over_the_conventional_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://a")
    monkeypatch.setenv("M8_VAULT_ADDR", "http://b")
    assert Settings().vault_addr == "http://b"
