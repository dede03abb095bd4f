"""The port every upstream secret store implements, and what its adapters share.

An adapter writes one value under one logical path ("team/db/password") idempotently:
the same idempotency key (the upload id) never makes a second upstream version. It never
puts a secret value into an exception message or a log line.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar

from m8.domain import check_path
from m8.domain.errors import InvalidPath

if TYPE_CHECKING:
    from m8.stores.adapters.marks import FingerprintMarks
    from m8.stores.types import StoreType

P = ParamSpec("P")
T = TypeVar("T")

# Upstream marks of a secret m8 writes: a Vault custom_metadata entry, an AWS tag.
MANAGED_BY_KEY = "managed-by"
MANAGED_BY_VALUE = "m8"

# AWS takes ClientRequestToken of 32 to 64 characters; a uuid4 (the upload id) has 36.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{32,64}")

# Bounds of an error's texts: what events show, and what upstream said (logs only).
DETAIL_MAX = 200
SAID_MAX = 300
# An HTTP status or an AWS error code ("HTTP 403", "AccessDeniedException").
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
# Credentials in a URL upstream quotes ("https://user:password@host"): not even in logs.
_USERINFO = re.compile(r"://[^/@\s]*@")


@dataclass(frozen=True)
class AdapterLimits:
    """What every adapter of a reactor gets: a timeout per call and its thread pool size."""

    timeout: float = 10.0
    threads: int = 8


@dataclass(frozen=True)
class UpstreamVersion:
    """The upstream version that holds an upload's value."""

    version: str
    # True when this call wrote the version, False when it found it already written under
    # the same idempotency key (a redelivery). Advisory only when calls with one key run
    # at the same moment: AWS cannot tell such twins apart, and each may report True.
    created: bool


@dataclass(frozen=True)
class UpstreamSecret:
    """What m8 may know about a secret's current upstream version; never its value."""

    version: str
    managed: bool  # carries the managed-by=m8 mark
    # The upload that wrote this version, as far as upstream tells (m8's ledger or marks,
    # the version id on AWS): also one that died before recording it.
    upload_id: str | None
    fingerprint: str | None  # that upload's fingerprint, when m8 recorded it


class UpstreamError(Exception):
    """Base class of the errors an upstream store adapter raises.

    Two texts, made in this one place. `detail` goes into events and so to GET
    /v1/uploads: m8's own fixed `summary` of the error class and the HTTP status or AWS
    error code, at most DETAIL_MAX characters, never upstream's words (they can name
    accounts, roles, resources and URLs, or quote the request). `str()` is for the
    operator's log: it adds the store, the path and what upstream `said`.
    """

    def __init__(
        self,
        summary: str,
        *,
        store: str = "",
        path: str | None = None,
        action: str = "",
        code: str | None = None,
        said: str = "",
    ) -> None:
        self.summary = summary
        self.store = store
        self.path = path
        self.action = action
        # A code that is not a plain token is upstream's text in disguise: left out.
        self.code = code if code is not None and _CODE.fullmatch(code) else None
        self.said = _USERINFO.sub("://***@", said)[:SAID_MAX]
        super().__init__(self._log_text())

    @property
    def detail(self) -> str:
        """What events and the API may show: m8's summary and the status or error code."""
        text = f"cannot {self.action}: {self.summary}" if self.action else self.summary
        if self.code:
            text += f" ({self.code})"
        return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."

    def _log_text(self) -> str:
        where = self.store
        if self.action:
            where += f": cannot {self.action}" + (f" {self.path!r}" if self.path else "")
        text = f"{where}: {self.summary}" if where else self.summary
        if self.code:
            text += f" ({self.code})"
        return f"{text}: {self.said}" if self.said else text


class TransientUpstreamError(UpstreamError):
    """The store may accept the same request later: retry with backoff."""


class PermanentUpstreamError(UpstreamError):
    """Retrying the same request will fail again until someone changes something."""


class NotManagedByM8(PermanentUpstreamError):
    """The secret exists upstream without m8's mark, and the store is not set to adopt it."""

    def __init__(self, *, store: str, path: str) -> None:
        super().__init__(
            # Within DETAIL_MAX: the event (and GET /v1/uploads) carries the advice whole.
            "the secret exists and is not managed by m8; refusing to overwrite it (to let "
            'm8 take it over: "adopt_unmanaged": true in the store\'s entry in '
            "M8_REACTOR_CREDENTIALS_FILE, then re-drive)",
            store=store,
            path=path,
            action="write",
        )


class UpstreamStore(Protocol):
    """One upstream secret store, written to idempotently and never read back by m8."""

    store_type: ClassVar[str]  # its StoreType's name: "vault", "aws", ...

    @property
    def name(self) -> str:
        """The store's name in m8."""
        ...

    async def put(
        self,
        path: str,
        value: bytes,
        idempotency_key: str,
        fingerprint: str,
        before_write: Callable[[], None] = lambda: None,
    ) -> UpstreamVersion:
        """Writes `value` as the new version of `path`, at most once per idempotency key.
        Calls `before_write` right before each request that writes the value; when it
        raises, the put stops there with its exception."""
        ...

    async def current(self, path: str) -> UpstreamSecret | None:
        """The current version and m8's marks on it, or None when `path` has no value."""
        ...

    async def written(self, path: str, upload_id: str) -> UpstreamSecret | None:
        """The version that upload `upload_id` wrote to `path`, current or not, with its
        fingerprint when m8 recorded it; None when upstream shows no write of it.

        The fingerprint of a version that is no longer current may be None: a store that
        keeps m8's marks on the current version only (AWS's tags) no longer has it."""
        ...

    async def read_value(self, path: str) -> bytes | None:
        """The current value of `path`; for tests and operators only, never m8's flow."""
        ...

    async def check(self) -> None:
        """Raises an UpstreamError when the store is unreachable or misconfigured."""
        ...

    async def close(self) -> None:
        """Releases the client and its threads; the store is unusable afterwards."""
        ...


class AdapterFactory(Protocol):
    """Builds a store's adapter from the reactor's entry for it (never from the catalog)."""

    def __call__(
        self, name: str, entry: Any, marks: FingerprintMarks, limits: AdapterLimits
    ) -> UpstreamStore: ...


def adapter_factory(store_type: StoreType) -> AdapterFactory:
    """The function that builds `store_type`'s adapters (this imports its upstream's SDK)."""
    module, _, attribute = store_type.adapter.partition(":")
    factory: AdapterFactory = getattr(importlib.import_module(module), attribute)
    return factory


# What an adapter makes of its client's exception, given the action and the path (if any).
Classify = Callable[[BaseException, str, str | None], UpstreamError | None]


def label(store_type: str, name: str) -> str:
    """How errors name a store: "vault store 'prod'"."""
    return f"{store_type} store {name!r}"


def check_request(store: str, path: str, idempotency_key: str) -> None:
    """Refuses a path or idempotency key that some store would not take as it is."""
    # The API checks paths too; here it keeps a bad one from climbing out of the prefix.
    try:
        check_path(path)
    except InvalidPath as exc:
        raise PermanentUpstreamError(
            "the path is not a valid secret path",
            store=store,
            path=path[:100],
            action="write",
            said=str(exc),
        ) from None
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise PermanentUpstreamError(
            "the idempotency key is not 32 to 64 characters of letters, digits, '-' and '_'",
            store=store,
            path=path,
            action="write",
        )


def utf8_or_none(value: bytes) -> str | None:
    """The value as text when it is valid UTF-8; None means store it as binary."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


class ThreadPool:
    """A bounded pool of threads that runs one adapter's blocking client calls."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs `fn` in the pool and waits for it without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def call(
        self, action: str, path: str | None, fn: Callable[[], T], classify: Classify
    ) -> T:
        """Runs `fn` in the pool; a client exception `classify` knows becomes an UpstreamError."""
        try:
            return await self.run(fn)
        except UpstreamError:
            raise
        except Exception as exc:
            error = classify(exc, action, path)
            if error is None:
                raise  # not the client's: the caller decides what a bug becomes
            # The client's exception stays out of the chain: m8 decides what a log may show.
            raise error from None

    async def close(self) -> None:
        """Drops queued calls. Running ones end at their timeout: nothing waits for them (a
        stopping service must not hang on a store that does not answer)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
