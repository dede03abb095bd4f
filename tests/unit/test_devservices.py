"""The local services manager fails loudly, with a way out, when a server is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from m8 import stores
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


def test_a_store_server_running_elsewhere_is_used_as_it_is(tmp_path: Path) -> None:
    dev = stores.get("aws").dev
    assert dev is not None
    elsewhere = Settings().model_copy(update={"aws_endpoint_url": "https://aws.example"})
    info = manager.start_store_server(dev, elsewhere, tmp_path)
    assert (info.name, info.url, info.managed, info.extra) == (
        "aws",
        "https://aws.example",
        False,
        {},
    )


def test_a_vault_elsewhere_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    dev = stores.get("vault").dev
    assert dev is not None
    address = f"http://127.0.0.1:{manager.free_port()}"  # nobody listens there
    elsewhere = Settings().model_copy(update={"vault_addr": address})
    with pytest.raises(ServiceError, match=r"VAULT_ADDR=.* does not answer as healthy"):
        manager.start_store_server(dev, elsewhere, tmp_path)


def test_the_environment_points_each_store_types_variables_at_its_server(
    tmp_path: Path,
) -> None:
    services = manager.Services(tmp_path)
    for name, url, extra in (
        ("rabbitmq", "amqp://127.0.0.1:5672/", {}),
        ("mongodb", "mongodb://127.0.0.1:1/", {}),
        ("openbao", "http://127.0.0.1:2", {"token": "t"}),
        ("aws", "http://127.0.0.1:3", {}),
    ):
        services.infos[name] = manager.ServiceInfo(name, url, managed=True, extra=extra)
    assert services.environment() == {
        "M8_AMQP_URL": "amqp://127.0.0.1:5672/",
        "M8_MONGODB_URI": "mongodb://127.0.0.1:1/",
        "VAULT_ADDR": "http://127.0.0.1:2",
        "VAULT_TOKEN": "t",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:3",
    }


def test_local_mongodb_gets_the_cache_the_settings_ask_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[list[str]] = []

    def spawn(_name: str, argv: list[str], *_args: object) -> None:
        started.append(argv)
        raise ServiceError("stop here")

    monkeypatch.setattr(manager, "spawn", spawn)
    with pytest.raises(ServiceError, match="stop here"):
        manager.start_mongodb(Settings(mongodb_uri=None, dev_mongodb_cache="6G"), tmp_path)
    [argv] = started
    assert argv[argv.index("--cache-size") + 1] == "6G"
    assert argv[argv.index("--storage-path") + 1] == ":memory:"


@pytest.mark.parametrize("size", ["0G", "8", "8GB", "-1G", "1.5G"])
def test_cache_sizes_the_server_would_not_take_are_refused(size: str) -> None:
    with pytest.raises(ValueError, match="dev_mongodb_cache"):
        Settings(dev_mongodb_cache=size)
