"""What m8 relies on from AWS Secrets Manager, shown against moto's server."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from mypy_boto3_secretsmanager import SecretsManagerClient

from tests.servers import Aws


@pytest.fixture
def sm(aws: Aws) -> SecretsManagerClient:
    return boto3.client("secretsmanager", endpoint_url=aws.endpoint_url, region_name=aws.region)


def test_same_request_token_and_value_makes_one_version(sm: SecretsManagerClient, aws: Aws) -> None:
    name = aws.prefix + "db"
    token = str(uuid.uuid4())
    sm.create_secret(Name=name, SecretString="first", ClientRequestToken=str(uuid.uuid4()))
    one = sm.put_secret_value(SecretId=name, SecretString="v", ClientRequestToken=token)
    two = sm.put_secret_value(SecretId=name, SecretString="v", ClientRequestToken=token)
    assert one["VersionId"] == two["VersionId"] == token
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert len(versions) == 2  # the first value and one for the repeated token
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"


def test_same_request_token_with_another_value_is_refused(
    sm: SecretsManagerClient, aws: Aws
) -> None:
    name = aws.prefix + "api"
    token = str(uuid.uuid4())
    sm.create_secret(Name=name, SecretString="a", ClientRequestToken=token)
    sm.put_secret_value(
        SecretId=name, SecretString="b", ClientRequestToken=(t2 := str(uuid.uuid4()))
    )
    with pytest.raises(ClientError) as refused:
        sm.put_secret_value(SecretId=name, SecretString="c", ClientRequestToken=t2)
    assert refused.value.response["Error"]["Code"] in {
        "ResourceExistsException",
        "InvalidRequestException",
    }
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "b"
