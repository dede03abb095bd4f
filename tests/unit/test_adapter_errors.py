"""Client exceptions of hvac and botocore become transient or permanent upstream errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    SSLError,
)
from hvac import exceptions as hvac_errors

from m8.stores.adapters.aws import classify_aws_error
from m8.stores.adapters.base import (
    NotManagedByM8,
    PermanentUpstreamError,
    ThreadPool,
    TransientUpstreamError,
    UpstreamError,
)
from m8.stores.adapters.vault import classify_vault_error

SECRET = "hunter2-do-not-show"
ENDPOINT = "http://127.0.0.1:1"


def vault_error(exc: BaseException) -> UpstreamError | None:
    return classify_vault_error(
        exc, store="vault store 'v'", action="write", path="team/db", mount="kv"
    )


def aws_error(exc: BaseException) -> UpstreamError | None:
    return classify_aws_error(exc, store="aws store 'a'", action="write", path="team/db")


def client_error(
    code: str, status: int = 400, message: str = "", operation: str = "PutSecretValue"
) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


def error_id(exc: BaseException) -> str:
    """A test id: the AWS error code, or the exception's class."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return type(exc).__name__


@pytest.mark.parametrize(
    "exc",
    [
        hvac_errors.VaultDown(errors=["Vault is sealed"]),
        hvac_errors.InternalServerError(errors=["internal error"]),
        hvac_errors.BadGateway(),
        hvac_errors.RateLimitExceeded(),
        hvac_errors.PreconditionFailed(),
        hvac_errors.UnexpectedError(),
        requests.exceptions.ConnectionError("connection refused"),
        requests.exceptions.ConnectTimeout(),
        requests.exceptions.ReadTimeout(),
        requests.exceptions.ChunkedEncodingError(),
    ],
    ids=error_id,
)
def test_vault_outages_are_transient(exc: BaseException) -> None:
    assert isinstance(vault_error(exc), TransientUpstreamError)


@pytest.mark.parametrize(
    "exc",
    [
        hvac_errors.Forbidden(errors=["permission denied"]),
        hvac_errors.Unauthorized(),
        hvac_errors.InvalidRequest(errors=["invalid role or secret ID"]),
        hvac_errors.InvalidPath(errors=[]),
        hvac_errors.VaultNotInitialized(),
        hvac_errors.UnsupportedOperation(),
        requests.exceptions.SSLError("certificate verify failed"),
        requests.exceptions.MissingSchema(),
    ],
    ids=error_id,
)
def test_vault_refusals_are_permanent(exc: BaseException) -> None:
    error = vault_error(exc)
    assert isinstance(error, PermanentUpstreamError)
    assert not isinstance(error, TransientUpstreamError)


def test_vault_missing_mount_is_permanent_and_names_the_mount() -> None:
    missing = hvac_errors.InvalidPath(
        errors=['no handler for route "kv/metadata/team/db". route entry not found.']
    )
    error = vault_error(missing)
    assert isinstance(error, PermanentUpstreamError)
    assert "no secrets engine is mounted at 'kv'" in str(error)


def test_vault_permission_denied_says_what_to_check() -> None:
    error = vault_error(hvac_errors.Forbidden(errors=["permission denied"]))
    assert "permission denied" in str(error)
    assert "policy" in str(error)


def test_vault_messages_name_store_and_path() -> None:
    error = vault_error(hvac_errors.VaultDown())
    assert error is not None
    assert str(error).startswith("vault store 'v': cannot write 'team/db': ")
    assert (error.store, error.path) == ("vault store 'v'", "team/db")


@pytest.mark.parametrize(
    "exc",
    [
        client_error("ThrottlingException"),
        client_error("TooManyRequestsException"),
        client_error("RequestLimitExceeded"),
        client_error("InternalServiceError", 500),
        client_error("SomethingNew", 503),
        client_error("ExpiredTokenException"),
        EndpointConnectionError(endpoint_url=ENDPOINT),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        ReadTimeoutError(endpoint_url=ENDPOINT),
        ConnectionClosedError(endpoint_url=ENDPOINT),
        CredentialRetrievalError(provider="sts", error_msg="timeout"),
    ],
    ids=error_id,
)
def test_aws_throttling_and_outages_are_transient(exc: BaseException) -> None:
    assert isinstance(aws_error(exc), TransientUpstreamError)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDeniedException", message="not authorized to PutSecretValue"),
        client_error("ValidationException"),
        client_error("InvalidParameterException"),
        client_error("InvalidRequestException", message="secret is marked for deletion"),
        client_error("ResourceNotFoundException", operation="TagResource"),
        client_error("LimitExceededException"),
        NoCredentialsError(),
        SSLError(endpoint_url=ENDPOINT, error=OSError("certificate verify failed")),
    ],
    ids=error_id,
)
def test_aws_refusals_are_permanent(exc: BaseException) -> None:
    error = aws_error(exc)
    assert isinstance(error, PermanentUpstreamError)
    assert not isinstance(error, TransientUpstreamError)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ResourceExistsException", "You can't use ClientRequestToken abc, it is in use."),
        ("InvalidRequestException", "ClientRequestToken abc was used with another value."),
    ],
)
def test_aws_same_token_with_another_value_is_permanent_and_says_so(
    code: str, message: str
) -> None:
    error = aws_error(client_error(code, message=message, operation="PutSecretValue"))
    assert isinstance(error, PermanentUpstreamError)
    assert "already used for a different value" in str(error)


def test_aws_validation_messages_are_not_repeated() -> None:
    quoting = client_error(
        "ValidationException", message=f"Value '{SECRET}' at 'secretString' failed"
    )
    error = aws_error(quoting)
    assert error is not None
    assert SECRET not in str(error)
    assert "ValidationException" in str(error)


def test_aws_client_side_validation_does_not_leak_the_value() -> None:
    error = aws_error(ParamValidationError(report=f"Invalid type for SecretString: {SECRET}"))
    assert isinstance(error, PermanentUpstreamError)
    assert SECRET not in str(error)


@pytest.mark.parametrize("classify", [vault_error, aws_error], ids=["vault", "aws"])
def test_errors_that_are_not_the_clients_are_left_alone(
    classify: Callable[[BaseException], UpstreamError | None],
) -> None:
    assert classify(ValueError("a bug")) is None
    assert classify(KeyError("data")) is None


def test_not_managed_by_m8_is_permanent() -> None:
    error = NotManagedByM8(store="aws store 'a'", path="team/db")
    assert isinstance(error, PermanentUpstreamError)
    assert "adopt_unmanaged" in str(error)


async def test_pool_call_gives_the_classified_error_without_the_clients_exception() -> None:
    pool = ThreadPool(1, name="test")

    def fails(exc: BaseException) -> Callable[[], None]:
        def call() -> None:
            raise exc

        return call

    def classify(exc: BaseException, action: str, path: str | None) -> UpstreamError | None:
        return vault_error(exc) if action == "write" else None

    try:
        with pytest.raises(TransientUpstreamError) as failed:
            await pool.call("write", "team/db", fails(hvac_errors.VaultDown(SECRET)), classify)
        assert SECRET not in str(failed.value)
        assert failed.value.__cause__ is None
        assert failed.value.__suppress_context__
        # Not the client's: the caller gets it as it is and decides.
        with pytest.raises(ValueError, match="a bug"):
            await pool.call("read", "team/db", fails(ValueError("a bug")), classify)
    finally:
        await pool.close()


# --- what events and GET /v1/uploads show: m8's words and a code, bounded ----------

ACCOUNT = "123456789012"
DENIED = (
    f"User: arn:aws:sts::{ACCOUNT}:assumed-role/m8-reactor/i-0abc is not authorized to "
    f"perform: secretsmanager:PutSecretValue on resource: arn:aws:secretsmanager:eu-west-1:"
    f"{ACCOUNT}:secret:m8/team/db because no identity-based policy allows it"
)
LEAKS = (ACCOUNT, "arn:", "hunter2", "https://", SECRET)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDeniedException", message=DENIED),
        client_error("KMSAccessDeniedException", message=DENIED),
        client_error("DecryptionFailure", message=DENIED),
        client_error("InternalServiceError", 500, message=DENIED),
        client_error(f"arn:aws:iam::{ACCOUNT}:role/x", message=DENIED),
        client_error("ValidationException", message=f"Value '{SECRET}' failed"),
        hvac_errors.Forbidden(errors=[f"permission denied on https://u:hunter2@vault/{SECRET}"]),
        hvac_errors.InvalidRequest(errors=[f"1 error occurred: {DENIED}"]),
        hvac_errors.InternalServerError(errors=[DENIED * 3]),
        requests.exceptions.ConnectionError(f"https://u:hunter2@vault:8200 refused {SECRET}"),
    ],
    ids=error_id,
)
def test_error_detail_says_what_happened_in_m8s_words_and_never_repeats_upstream(
    exc: BaseException,
) -> None:
    error = aws_error(exc) if isinstance(exc, ClientError) else vault_error(exc)
    assert error is not None
    assert error.detail.startswith("cannot write: ")
    assert len(error.detail) <= 200
    assert not [leak for leak in LEAKS if leak in error.detail]


def test_aws_error_detail_keeps_the_error_code_and_the_log_text_keeps_what_aws_said() -> None:
    error = aws_error(client_error("AccessDeniedException", message=DENIED))
    assert error is not None
    assert error.detail == "cannot write: access denied by AWS (AccessDeniedException)"
    assert ACCOUNT in str(error)  # for the operator, in the reactor's log only


def test_vault_error_detail_keeps_the_http_status() -> None:
    error = vault_error(hvac_errors.InvalidRequest(errors=[DENIED]))
    assert error is not None
    assert error.detail == "cannot write: Vault refused the request (HTTP 400)"


def test_not_managed_by_m8_detail_names_neither_store_nor_path() -> None:
    error = NotManagedByM8(store="aws store 'a'", path="team/db")
    assert error.detail.startswith("cannot write: the secret exists and is not managed by m8")
    assert "team/db" not in error.detail


def test_credentials_in_a_url_upstream_quotes_stay_out_of_the_log_text_too() -> None:
    error = vault_error(hvac_errors.InvalidRequest(errors=["see https://u:hunter2@vault/x"]))
    assert error is not None
    assert "hunter2" not in str(error)
    assert "https://***@vault/x" in str(error)
