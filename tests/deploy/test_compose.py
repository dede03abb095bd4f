"""deploy/compose.yaml against the Compose specification's JSON schema (a checked-in copy:
deploy/schemas/README.md says where it came from)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the file's anchors and `<<` merge keys, as Compose does.
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def _errors(validator: jsonschema.Draft202012Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification(
    validator: jsonschema.Draft202012Validator, compose: dict[str, Any]
) -> None:
    assert _errors(validator, compose) == []


def test_the_schema_rejects_what_compose_would_refuse(
    validator: jsonschema.Draft202012Validator, compose: dict[str, Any]
) -> None:
    # The check above can fail: a misspelt key and a wrong depends_on condition are caught.
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["keyrotator"]["depends_on"]["mongodb-init"]["condition"] = "done"
    errors = _errors(validator, broken)
    assert any("intervall" in error for error in errors), errors
    assert any("depends_on" in error for error in errors), errors


def test_every_secret_a_service_names_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["secrets"])
    used = {
        secret["source"] if isinstance(secret, dict) else secret
        for service in compose["services"].values()
        for secret in service.get("secrets", [])
    }
    assert used <= declared, used - declared
    assert declared <= used, f"declared but given to no service: {declared - used}"
