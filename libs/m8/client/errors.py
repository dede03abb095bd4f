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


class ClientError(Exception):
    """An error m8ctl reports to a person: a message and an exit code."""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """The API answered with a problem (RFC 9457)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        if status in (401, 403):
            self.exit_code = ExitCode.UNAUTHORISED


class Unreachable(ClientError):
    """No answer from the server."""

    exit_code = ExitCode.UNREACHABLE


class UntrustedKey(ClientError):
    """The upload key is not signed by a rotator key this client trusts."""

    exit_code = ExitCode.UNTRUSTED_KEY


class NotLoggedIn(ClientError):
    """No server and token configured yet."""

    exit_code = ExitCode.UNAUTHORISED
