"""AWS Secrets Manager as an upstream store.

Idempotency is AWS's own: every write carries ClientRequestToken = the upload id, and the
same token again gives back the same version (its id is the token) instead of a second
one; the same token with another value is refused. A secret's name is name_prefix + path.

Tags mark what m8 manages: managed-by=m8, and m8-fingerprint (sealed unless the store
shows fingerprints, see marks.py) and m8-upload-id of the latest m8 write. Tags are set
after the value, by a second request; a redelivery that finds its version current sets
them again, so a crash between the two heals with the redelivery. Until then `current`
reports the fingerprint as unknown rather than wrong.

The store's credentials come from boto3's usual chain (environment, role) and need, on
the secrets ``<name_prefix>*``: secretsmanager:DescribeSecret, CreateSecret,
PutSecretValue, TagResource and ListSecretVersionIds (kms:GenerateDataKey with a
customer KMS key); GetSecretValue only for `read_value`, which tests and operators use
and m8 never does.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from m8.stores.adapters.base import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    AdapterLimits,
    NotManagedByM8,
    PermanentUpstreamError,
    ThreadPool,
    TransientUpstreamError,
    UpstreamError,
    UpstreamSecret,
    UpstreamVersion,
    check_request,
    label,
    utf8_or_none,
)
from m8.stores.adapters.marks import FingerprintMarks
from m8.stores.aws import AwsCredentials

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_secretsmanager.type_defs import TagTypeDef

P = ParamSpec("P")
T = TypeVar("T")

FINGERPRINT_TAG = "m8-fingerprint"
UPLOAD_ID_TAG = "m8-upload-id"
CURRENT = "AWSCURRENT"
READINESS_PROBE = "m8-readiness-probe"

THROTTLED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
UNAVAILABLE = frozenset(
    {
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        # Role credentials expire and the provider chain fetches new ones.
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
# Codes whose AWS message may quote the offending request field, which can be the value.
QUOTING = frozenset({"ValidationException", "InvalidParameterException"})


@dataclass(frozen=True)
class AwsSecretsManagerConfig:
    """Where an AWS Secrets Manager store lives and how hard m8 may write to it."""

    name: str
    region: str
    # Sealed fingerprints, unless the store is set to show them (marks.py).
    marks: FingerprintMarks
    name_prefix: str = ""
    kms_key_id: str | None = None
    endpoint_url: str | None = None
    adopt_unmanaged: bool = False
    # AWS allows 50 writes a second per account and region; leave room for others.
    max_writes_per_second: float = 40.0
    timeout: float = 10.0
    max_workers: int = 8


def from_credentials(
    name: str, entry: AwsCredentials, marks: FingerprintMarks, limits: AdapterLimits
) -> AwsSecretsManagerStore:
    """The adapter of the store `name`, built from the reactor's entry alone."""
    return AwsSecretsManagerStore(
        AwsSecretsManagerConfig(
            name=name,
            region=entry.region,
            marks=marks,
            name_prefix=entry.name_prefix,
            kms_key_id=entry.kms_key_id,
            endpoint_url=entry.endpoint_url,
            adopt_unmanaged=entry.adopt_unmanaged,
            timeout=limits.timeout,
            max_workers=limits.threads,
        )
    )


class WriteRateLimiter:
    """Spaces the calls of all tasks at least 1/rate seconds apart."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self._interval = 1.0 / per_second
        self._next = 0.0

    async def acquire(self) -> None:
        """Waits for this call's turn; turns are handed out in call order."""
        now = time.monotonic()
        turn = max(now, self._next)
        self._next = turn + self._interval
        if turn > now:
            await asyncio.sleep(turn - now)


@dataclass(frozen=True)
class _Described:
    """What DescribeSecret tells m8: tags and labelled versions, never the value."""

    tags: Mapping[str, str]
    stages: Mapping[str, list[str]]  # version id -> staging labels

    @property
    def current(self) -> str | None:
        return next((v for v, labels in self.stages.items() if CURRENT in labels), None)

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def classify_aws_error(
    exc: BaseException, *, store: str, action: str, path: str | None
) -> UpstreamError | None:
    """The UpstreamError for a botocore exception; None for anything else.

    The error's detail (events, the API) is m8's summary and AWS's error code. AWS's
    message (which names accounts, roles and resources) goes to the log only, and not
    even there where it may quote request fields (validation errors), nor botocore's own
    texts, so no secret value gets into a message.
    """

    def transient(summary: str, code: str | None = None) -> UpstreamError:
        return TransientUpstreamError(summary, store=store, path=path, action=action, code=code)

    def permanent(summary: str, code: str | None = None, said: str = "") -> UpstreamError:
        return PermanentUpstreamError(
            summary, store=store, path=path, action=action, code=code, said=said
        )

    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if code in THROTTLED:
            return transient("AWS is throttling m8", code)
        if code in UNAVAILABLE or status >= 500:
            return transient(f"AWS is unavailable (HTTP {status})", code)
        if exc.operation_name == "PutSecretValue" and (
            code == "ResourceExistsException"
            or (code == "InvalidRequestException" and "ClientRequestToken" in message)
        ):
            return permanent("this idempotency key was already used for a different value", code)
        if code in QUOTING:
            return permanent(
                "AWS refused the request as invalid; usual causes are a value over 64 KiB, "
                "a name AWS does not accept, or a bad KMS key",
                code,
            )
        if code.startswith("AccessDenied"):
            return permanent("access denied by AWS", code, said=message)
        return permanent("AWS refused the request", code, said=message)
    if isinstance(exc, SSLError):
        return permanent("the TLS handshake with AWS failed (check endpoint_url and CA)")
    if isinstance(exc, BotoConnectionError | HTTPClientError | CredentialRetrievalError):
        return transient("AWS is unreachable or did not answer in time", type(exc).__name__)
    if isinstance(exc, BotoCoreError):
        return permanent("the AWS client refused the request", type(exc).__name__)
    return None


class AwsSecretsManagerStore:
    """Secrets Manager in one AWS account and region."""

    store_type: ClassVar[str] = "aws"

    def __init__(self, config: AwsSecretsManagerConfig) -> None:
        self.config = config
        self._label = label(self.store_type, config.name)
        self._pool = ThreadPool(config.max_workers, name=f"m8-aws-{config.name}")
        self._limiter = WriteRateLimiter(config.max_writes_per_second)
        session = boto3.session.Session(region_name=config.region)
        self._client: SecretsManagerClient = session.client(
            "secretsmanager",
            endpoint_url=config.endpoint_url,
            config=Config(
                # One attempt per call: retrying, with backoff, is the reactor's decision.
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=config.timeout,
                read_timeout=config.timeout,
                max_pool_connections=config.max_workers,
            ),
        )
        self._closed = False

    @property
    def name(self) -> str:
        """The store's name in m8."""
        return self.config.name

    async def put(
        self,
        path: str,
        value: bytes,
        idempotency_key: str,
        fingerprint: str,
        before_write: Callable[[], None] = lambda: None,
    ) -> UpstreamVersion:
        """Writes `value` as a new version of `path`, once per idempotency key; calls
        `before_write` right before each request that writes it."""
        check_request(self._label, path, idempotency_key)
        found = await self._call("describe", path, self._describe_sync, path)
        if found is None:
            await self._limiter.acquire()
            before_write()
            created = await self._call(
                "create", path, self._create_sync, path, value, idempotency_key, fingerprint
            )
            if created is not None:
                return UpstreamVersion(created, created=True)
            # Someone created it meanwhile: carry on as with any existing secret.
            found = await self._call("describe", path, self._describe_sync, path)
            if found is None:
                raise TransientUpstreamError(
                    "the secret was created and deleted meanwhile; retry",
                    store=self._label,
                    path=path,
                    action="write",
                )
        if idempotency_key in found.stages:
            if found.current == idempotency_key:
                await self._mark(path, found, idempotency_key, fingerprint)
            return UpstreamVersion(idempotency_key, created=False)
        if not found.managed and not self.config.adopt_unmanaged:
            raise NotManagedByM8(store=self._label, path=path)
        await self._limiter.acquire()
        before_write()
        version, current = await self._call(
            "write", path, self._put_sync, path, value, idempotency_key
        )
        if not current:
            # An old version of this upload, no longer labelled: AWS ignored the repeat.
            return UpstreamVersion(version, created=False)
        await self._mark(path, found, version, fingerprint)
        return UpstreamVersion(version, created=True)

    async def current(self, path: str) -> UpstreamSecret | None:
        """The current version and m8's marks on it, or None when `path` has no value."""
        found = await self._call("describe", path, self._describe_sync, path)
        version = found.current if found else None
        if found is None or version is None:
            return None
        ours = found.tags.get(UPLOAD_ID_TAG) == version
        return UpstreamSecret(
            version=version,
            managed=found.managed,
            # m8 writes with the upload id as the version id: a writer that died before it
            # tagged is known by it too (callers match it against their uploads).
            upload_id=version,
            fingerprint=self._fingerprint(found, version) if ours else None,
        )

    async def written(self, path: str, upload_id: str) -> UpstreamSecret | None:
        """The version upload `upload_id` wrote to `path`, current or not (its id is the
        upload id); with its fingerprint while the tags are that upload's."""
        found = await self._call("describe", path, self._describe_sync, path)
        if found is None:
            return None
        if upload_id not in found.stages:
            # No longer labelled: AWS lists such versions only when asked for them.
            versions = await self._call("list versions of", path, self._versions_sync, path)
            if upload_id not in versions:
                return None
        ours = found.tags.get(UPLOAD_ID_TAG) == upload_id
        return UpstreamSecret(
            version=upload_id,
            managed=found.managed,
            upload_id=upload_id,
            fingerprint=self._fingerprint(found, upload_id) if ours else None,
        )

    async def read_value(self, path: str) -> bytes | None:
        """The current value of `path`; for tests and operators only, never m8's flow."""
        return await self._call("read", path, self._value_sync, path)

    async def check(self) -> None:
        """Raises an UpstreamError unless m8 can reach AWS and describe under the prefix."""
        await self._call("describe under the prefix", None, self._describe_sync, None)

    async def close(self) -> None:
        """Releases the threads and HTTP connections."""
        if self._closed:
            return
        self._closed = True
        await self._pool.close()
        self._client.close()

    async def _mark(self, path: str, found: _Described, upload_id: str, fingerprint: str) -> None:
        """Tags the secret as m8's, with the fingerprint of `upload_id`, unless it is."""
        marked = (
            found.managed
            and found.tags.get(UPLOAD_ID_TAG) == upload_id
            and self._fingerprint(found, upload_id) == fingerprint
        )
        if marked:
            return
        await self._limiter.acquire()
        await self._call("tag", path, self._tag_sync, path, self._tags(upload_id, fingerprint))

    def _tags(self, upload_id: str, fingerprint: str) -> dict[str, str]:
        return {
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
            FINGERPRINT_TAG: self.config.marks.mark(fingerprint, upload_id),
            UPLOAD_ID_TAG: upload_id,
        }

    def _fingerprint(self, found: _Described, upload_id: str) -> str | None:
        return self.config.marks.read(found.tags.get(FINGERPRINT_TAG), upload_id)

    async def _call(
        self,
        action: str,
        path: str | None,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Runs a blocking boto3 call in the pool; its failure becomes an UpstreamError."""
        return await self._pool.call(
            action, path, functools.partial(fn, *args, **kwargs), self._classify
        )

    def _classify(self, exc: BaseException, action: str, path: str | None) -> UpstreamError | None:
        return classify_aws_error(exc, store=self._label, action=action, path=path)

    def _name(self, path: str | None) -> str:
        return self.config.name_prefix + (READINESS_PROBE if path is None else path)

    def _describe_sync(self, path: str | None) -> _Described | None:
        try:
            answer = self._client.describe_secret(SecretId=self._name(path))
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        tags = {t["Key"]: t["Value"] for t in answer.get("Tags", []) if "Key" in t}
        return _Described(tags=tags, stages=dict(answer.get("VersionIdsToStages", {})))

    def _versions_sync(self, path: str) -> set[str]:
        found: set[str] = set()
        page = self._client.list_secret_version_ids(
            SecretId=self._name(path), IncludeDeprecated=True
        )
        while True:
            found |= {v["VersionId"] for v in page.get("Versions", []) if "VersionId" in v}
            more = page.get("NextToken")
            if not more:
                return found
            page = self._client.list_secret_version_ids(
                SecretId=self._name(path), IncludeDeprecated=True, NextToken=more
            )

    def _create_sync(self, path: str, value: bytes, token: str, fingerprint: str) -> str | None:
        """The new version id, or None when a secret of that name exists already."""
        tags: list[TagTypeDef] = [
            {"Key": k, "Value": v} for k, v in self._tags(token, fingerprint).items()
        ]
        extra = _payload(value)
        if self.config.kms_key_id:
            extra["KmsKeyId"] = self.config.kms_key_id
        try:
            answer = self._client.create_secret(
                Name=self._name(path), ClientRequestToken=token, Tags=tags, **extra
            )
        except ClientError as exc:
            if _code(exc) == "ResourceExistsException":
                return None
            raise
        return answer["VersionId"]

    def _put_sync(self, path: str, value: bytes, token: str) -> tuple[str, bool]:
        """The version id, and whether it is the current version now."""
        answer = self._client.put_secret_value(
            SecretId=self._name(path), ClientRequestToken=token, **_payload(value)
        )
        return answer["VersionId"], CURRENT in answer.get("VersionStages", [])

    def _tag_sync(self, path: str, tags: Mapping[str, str]) -> None:
        self._client.tag_resource(
            SecretId=self._name(path), Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )

    def _value_sync(self, path: str) -> bytes | None:
        try:
            answer = self._client.get_secret_value(SecretId=self._name(path))
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        # The stubs say both fields are always there; AWS sends exactly one of them.
        fields: Mapping[str, Any] = answer
        if fields.get("SecretBinary") is not None:
            return bytes(fields["SecretBinary"])
        return str(fields.get("SecretString", "")).encode("utf-8")


def _payload(value: bytes) -> dict[str, Any]:
    """SecretString when the value is UTF-8 text, else SecretBinary."""
    text = utf8_or_none(value)
    return {"SecretString": text} if text is not None else {"SecretBinary": value}
