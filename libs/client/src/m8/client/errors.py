"""What goes wrong on the client side, each with the exit code m8ctl uses for it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """m8ctl's exit codes: scripts can tell outcomes apart."""

    OK = 0
    ERROR = 1
    USAGE = 2
    REJECTED = 3
    FAILED = 4
    UNAUTHORISED = 5
    UNREACHABLE = 6
    UNTRUSTED_KEY = 7
    PENDING = 8
    EXPIRED = 9
    UNVERIFIED = 10  # the server claims an outcome that no pinned receipt key vouches for
    SUPERSEDED = 11  # a newer upload to the same path was stored first: this one was not


class ClientError(Exception):
    """An error m8ctl reports to a person: a message and an exit code."""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """The API answered with a problem (RFC 9457)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        code: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code  # the problem type's last part, e.g. `store_inactive`
        self.retry_after = retry_after  # seconds, from a 429's or 503's Retry-After
        if status in (401, 403):
            self.exit_code = ExitCode.UNAUTHORISED


class UsageError(ClientError):
    """The command cannot run as given; the message says what to give instead."""

    exit_code = ExitCode.USAGE


class Unreachable(ClientError):
    """No answer from the server."""

    exit_code = ExitCode.UNREACHABLE


class UntrustedKey(ClientError):
    """The upload key is not signed by a rotator key this client trusts."""

    exit_code = ExitCode.UNTRUSTED_KEY


class UnverifiedOutcome(ClientError):
    """The server says how an upload ended, but no pinned receipt key signed that."""

    exit_code = ExitCode.UNVERIFIED


class NotLoggedIn(ClientError):
    """No server and token configured yet."""

    exit_code = ExitCode.UNAUTHORISED
