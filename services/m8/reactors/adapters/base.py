"""The port every upstream secret store implements, and what its adapters share.

An adapter writes one value under one logical path ("team/db/password") idempotently:
the same idempotency key (the upload id) never makes a second upstream version. It never
puts a secret value into an exception message or a log line.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, ParamSpec, Protocol, TypeVar

from m8.domain import check_path
from m8.domain.errors import InvalidPath

P = ParamSpec("P")
T = TypeVar("T")

# Upstream marks of a secret m8 writes: a Vault custom_metadata entry, an AWS tag.
MANAGED_BY_KEY = "managed-by"
MANAGED_BY_VALUE = "m8"

# AWS takes ClientRequestToken of 32 to 64 characters; a uuid4 (the upload id) has 36.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{32,64}")


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
    upload_id: str | None  # the upload that wrote this version, when m8 recorded it
    fingerprint: str | None  # that upload's fingerprint, when m8 recorded it


class UpstreamError(Exception):
    """Base class of the errors an upstream store adapter raises."""

    def __init__(self, message: str, *, store: str = "", path: str | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.path = path


class TransientUpstreamError(UpstreamError):
    """The store may accept the same request later: retry with backoff."""


class PermanentUpstreamError(UpstreamError):
    """Retrying the same request will fail again until someone changes something."""


class NotManagedByM8(PermanentUpstreamError):
    """The secret exists upstream without m8's mark, and the store is not set to adopt it."""

    def __init__(self, *, store: str, path: str) -> None:
        super().__init__(
            f"{store}: {path!r} exists and is not managed by m8; refusing to overwrite it "
            "(configure the store with adopt_unmanaged to let m8 take it over)",
            store=store,
            path=path,
        )


class UpstreamStore(Protocol):
    """One upstream secret store, written to idempotently and never read back by m8."""

    store_type: ClassVar[str]  # "vault" | "aws"

    @property
    def name(self) -> str:
        """The store's name in m8."""
        ...

    async def put(
        self, path: str, value: bytes, idempotency_key: str, fingerprint: str
    ) -> UpstreamVersion:
        """Writes `value` as the new version of `path`, at most once per idempotency key."""
        ...

    async def current(self, path: str) -> UpstreamSecret | None:
        """The current version and m8's marks on it, or None when `path` has no value."""
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
            f"{store}: {path[:100]!r} is not a valid secret path: {exc}", store=store, path=path
        ) from None
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise PermanentUpstreamError(
            f"{store}: the idempotency key is not 32 to 64 characters of letters, digits, "
            "'-' and '_'",
            store=store,
            path=path,
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
        """Drops queued calls and waits, off the event loop, for running ones to end."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
