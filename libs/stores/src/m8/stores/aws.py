"""AWS Secrets Manager as a store type (the adapter: adapters/aws.py)."""

from __future__ import annotations

from pydantic import Field

from m8.stores.types import (
    URL_PATTERN,
    DevServer,
    FingerprintInMetadata,
    StoreConfig,
    StoreCredentials,
    StoreType,
)


class AwsStoreConfig(StoreConfig):
    """An AWS Secrets Manager store. Credentials come from the reactors' environment."""

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$", examples=["eu-west-1"])
    name_prefix: str = Field(
        max_length=256,
        pattern=r"^[A-Za-z0-9/_+=.@-]*$",
        examples=["m8/"],
        description="Prefix of secret names.",
    )
    kms_key_id: str | None = Field(default=None, max_length=2048, pattern=r"^[A-Za-z0-9:/_-]+$")
    endpoint_url: str | None = Field(
        default=None, max_length=2048, pattern=URL_PATTERN, description="For a non-AWS endpoint."
    )
    fingerprint_in_metadata: FingerprintInMetadata = False


class AwsCredentials(StoreCredentials):
    """Where one AWS Secrets Manager store lives; its keys come from boto3's chain."""

    region: str
    name_prefix: str
    endpoint_url: str | None = None
    kms_key_id: str | None = None


AWS = StoreType(
    name="aws",
    title="AWS Secrets Manager",
    config=AwsStoreConfig,
    credentials=AwsCredentials,
    pinned=("region", "name_prefix", "endpoint_url", "kms_key_id", "fingerprint_in_metadata"),
    addresses=("endpoint_url",),
    entry_field="region",
    cli_defaults={"name_prefix": ""},
    # A secret value in Secrets Manager.
    max_value_bytes=64 * 1024,
    adapter="m8.stores.adapters.aws:from_credentials",
    dev=DevServer(
        server="aws",
        command=("moto_server", "-H", "127.0.0.1", "-p", "{port}"),
        ready="/moto-api/",
        address_variable="AWS_ENDPOINT_URL",
        address_field="endpoint_url",
        # Elsewhere is AWS itself or another emulator, which has no /moto-api/.
        ready_elsewhere=False,
        config={"region": "us-east-1", "name_prefix": "m8/"},
        # moto takes any keys; a real AWS uses boto3's usual credential chain.
        reactor_environment={"AWS_ACCESS_KEY_ID": "dev", "AWS_SECRET_ACCESS_KEY": "dev"},
    ),
)
