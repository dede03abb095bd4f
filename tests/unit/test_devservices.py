"""The local services manager fails loudly, with a way out, when a server is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from m8.config import Settings
from m8.devservices import ServiceError, manager


def test_missing_rabbitmq_names_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    port = manager.free_port()  # nobody listens there
    settings = Settings(amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/")
    with pytest.raises(ServiceError, match="apt-get install rabbitmq-server"):
        manager.start_rabbitmq(settings, tmp_path)


def test_external_mongodb_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    port = manager.free_port()
    settings = Settings(mongodb_uri=f"mongodb://127.0.0.1:{port}/")
    with pytest.raises(ServiceError, match="M8_MONGODB_URI"):
        manager.start_mongodb(settings, tmp_path)


def test_state_round_trips_and_is_private(tmp_path: Path) -> None:
    services = manager.Services(tmp_path)
    services.infos["openbao"] = manager.ServiceInfo(
        "openbao", "http://127.0.0.1:1", managed=True, pid=123, extra={"token": "t"}
    )
    services.save()
    assert (tmp_path / manager.STATE_FILE).stat().st_mode & 0o077 == 0
    assert manager.Services.load(tmp_path).infos == services.infos
