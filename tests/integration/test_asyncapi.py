"""docs/asyncapi.yaml says what m8 publishes, and it is what m8 publishes.

The document is checked against the official AsyncAPI 3.0.0 JSON schema, a copy of
`schemas/3.0.0-without-$id.json` from the npm package @asyncapi/specs 6.11.1 (Apache-2.0)
in tests/data/. Its messages are checked against what a consumer with a broker user of
the consumer kind receives when m8's services publish one event of every kind.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from m8.eventstore import MongoEventRecorder
from m8.messaging.permissions import consumable
from tests.servers import Broker
from tests.support import asyncapi
from tests.support.bus import CIPHERTEXT, consumer_url, every_event, publish_as_m8

SCHEMA = Path(__file__).parents[1] / "data" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(asyncapi.DOCUMENT.read_text())
    return loaded


def test_the_document_is_generated_from_the_current_event_models() -> None:
    assert asyncapi.DOCUMENT.read_text() == asyncapi.render(), (
        "docs/asyncapi.yaml is out of date: run python -m tests.support.asyncapi"
    )


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(document)
    ]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


def test_every_event_type_that_goes_to_the_bus_is_in_the_document_and_no_other(
    document: dict[str, Any],
) -> None:
    samples = [event for _, _, events in every_event() for event in events]
    # The samples cover every event class m8 has: a new class without a sample fails here.
    assert {type(e) for e in samples} == set(asyncapi.event_classes())
    on_bus = {e.event_type for e in samples if e.on_bus()}
    messages = {m["name"] for m in document["components"]["messages"].values()}
    assert messages == on_bus
    assert on_bus == {t for kind in consumable() for t in kind.event_types}
    addresses = {c["address"] for c in document["channels"].values()}
    assert "secret.secret_stored.{store_type}" in addresses
    assert "upload_key.upload_key_destroyed" in addresses


async def test_every_message_m8_publishes_matches_its_schema_without_ciphertext_or_fingerprint(
    broker: Broker, recorder: MongoEventRecorder, document: dict[str, Any]
) -> None:
    received = await _receive_everything(broker, recorder, document)
    assert {m.type for m in received} == {
        m["name"] for m in document["components"]["messages"].values()
    }
    for message in received:
        body = json.loads(message.body)
        spec = document["components"]["messages"][asyncapi_key(body)]
        _validator(document, spec["payload"]).validate(body)
        _validator(document, spec["headers"]).validate(dict(message.headers))
        # Declared fields only: a field the models have and the document lacks fails.
        key = asyncapi_key(body)
        data_schema = document["components"]["schemas"][f"{key}.data"]
        assert set(body["data"]) <= set(data_schema["properties"]), body["event_type"]
        assert message.message_id == body["event_id"]
        assert message.correlation_id == body["metadata"]["correlation_id"]
        assert CIPHERTEXT not in message.body.decode()
        if body["event_type"] == "SecretUploadRequested":
            assert body["data"]["ciphertext"] is None
        if body["event_type"] == "SecretStored":
            assert body["data"]["fingerprint"] is None  # an equality oracle: store only


def asyncapi_key(body: dict[str, Any]) -> str:
    """The document's name for the message of `body`: `SecretStored.v1`."""
    return f"{body['event_type']}.v{body['event_version']}"


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    # The document's own `$ref`s (#/components/...) resolve within it.
    return jsonschema.Draft7Validator({**schema, "components": document["components"]})


async def _receive_everything(
    broker: Broker, recorder: MongoEventRecorder, document: dict[str, Any]
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Binds a consumer's queue to every channel of the document, as the consumer kind of
    user may, lets m8's relays publish every event, and returns what arrived."""
    connection = await aio_pika.connect(consumer_url(broker, "asyncapi"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("consumer.asyncapi")
        for spec in document["channels"].values():
            await queue.bind("m8.events", routing_key=spec["address"].replace("{store_type}", "*"))
        expected = await publish_as_m8(broker, recorder)
        received: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(60):
            while len(received) < expected:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                received.append(message)
        assert await queue.get(fail=False) is None
    return received
