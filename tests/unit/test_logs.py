"""Log lines are JSON and never carry a field named like a secret value."""

from __future__ import annotations

import json
import logging

import pytest

from m8.logs import REFUSED, configure_logging


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    configure_logging("INFO", "json")
    logger = logging.getLogger("m8.test")
    logger.info(
        "upload accepted",
        extra={"upload_id": "u-1", "value": "hunter2", "private_key": "k", "kek_id": "kek-1"},
    )
    logger.info("plain line")
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_every_log_line_is_one_json_object(log_lines: list[dict[str, object]]) -> None:
    assert [line["message"] for line in log_lines] == ["upload accepted", "plain line"]
    assert all(line["level"] == "INFO" for line in log_lines)


def test_fields_named_like_secret_values_are_refused(log_lines: list[dict[str, object]]) -> None:
    line = log_lines[0]
    assert line["value"] == REFUSED
    assert line["private_key"] == REFUSED
    assert line["refused_fields"] == ["private_key", "value"]
    assert "hunter2" not in json.dumps(log_lines)


def test_harmless_fields_pass(log_lines: list[dict[str, object]]) -> None:
    assert log_lines[0]["upload_id"] == "u-1"
    assert log_lines[0]["kek_id"] == "kek-1"
