"""A mutable holder for secret bytes that can be overwritten when no longer needed."""

from __future__ import annotations

import hmac
from types import TracebackType
from typing import NoReturn, Self

from m8.crypto.errors import SecretWiped


class SecretBytes:
    """Secret bytes in a ``bytearray`` that :meth:`wipe` overwrites with zeros.

    Use it as a context manager so the wipe happens on every exit path. It never shows its
    content in ``repr``/``str``, refuses pickling and copying, and compares in constant time.

    What this does not do, because CPython cannot: the immutable ``bytes`` and ``str``
    objects a secret passed through before it got here (socket buffers, JSON and base64
    decoding, PyNaCl's return values, anything :meth:`reveal` hands out) are freed but not
    zeroed, and the allocator may keep their memory for a while; pages may be swapped or
    appear in a core dump. Wiping shortens how long one copy lives; it does not make the
    process memory safe. Treat a reactor's memory as holding plaintext while it works.
    """

    __slots__ = ("_buf", "_wiped")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._buf = bytearray(data)
        self._wiped = False

    @classmethod
    def adopt(cls, buffer: bytearray) -> SecretBytes:
        """Take ownership of ``buffer`` without copying it; wiping will zero it."""
        holder = cls.__new__(cls)
        holder._buf = buffer
        holder._wiped = False
        return holder

    @property
    def wiped(self) -> bool:
        """Whether :meth:`wipe` has run."""
        return self._wiped

    def wipe(self) -> None:
        """Overwrite the content with zeros; later reads raise :class:`SecretWiped`."""
        # Same-length slice assignment writes in place, also while a memoryview is out.
        self._buf[:] = bytes(len(self._buf))
        self._wiped = True

    def reveal(self) -> bytes:
        """An immutable copy, for APIs that insist on ``bytes``; that copy cannot be wiped."""
        self._check()
        return bytes(self._buf)

    def view(self) -> memoryview:
        """A read-only view of the content, without copying; zero after :meth:`wipe`."""
        self._check()
        return memoryview(self._buf).toreadonly()

    def __len__(self) -> int:
        self._check()
        return len(self._buf)

    def _check(self) -> None:
        if self._wiped:
            raise SecretWiped("the secret was wiped")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __del__(self) -> None:
        # Best effort only: __del__ may run late or, at interpreter exit, not at all.
        buf = getattr(self, "_buf", None)
        if buf is not None:
            buf[:] = bytes(len(buf))

    def __repr__(self) -> str:
        return "SecretBytes(<wiped>)" if self._wiped else "SecretBytes(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretBytes):
            other_data: bytes | bytearray = other._buf
            other._check()
        elif isinstance(other, bytes | bytearray):
            other_data = other
        else:
            return NotImplemented
        self._check()
        return hmac.compare_digest(self._buf, other_data)

    # Mutable and secret: a hash would be both wrong and a comparison oracle.
    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled or copied")

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled or copied")

    def __copy__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied; pass the same holder")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied; pass the same holder")

    def __bytes__(self) -> NoReturn:
        # bytes(secret) would be an easy, unnoticed way to leak an unwipeable copy.
        raise TypeError("use SecretBytes.reveal() to get an (unwipeable) bytes copy")
