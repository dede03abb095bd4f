"""How a reactor retries an upstream write that failed for a reason that may pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from m8.stores.adapters import TransientUpstreamError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, `attempts` tries in all."""

    attempts: int = 10
    backoff: float = 0.5  # the first wait; each next one doubles, up to max_backoff
    max_backoff: float = 8.0

    def retrying(self, before_sleep: Callable[[RetryCallState], None]) -> AsyncRetrying:
        """A tenacity loop that retries TransientUpstreamError and re-raises the last one."""
        return AsyncRetrying(
            retry=retry_if_exception_type(TransientUpstreamError),
            stop=stop_after_attempt(self.attempts),
            # Jitter: reactors that lost upstream together should not return together.
            wait=wait_exponential_jitter(
                multiplier=self.backoff, max=self.max_backoff, jitter=self.backoff
            ),
            before_sleep=before_sleep,
            reraise=True,
        )

    def patience(self) -> float:
        """The least time spent waiting between attempts: how long upstream may be away."""
        waits = (min(self.backoff * 2.0**n, self.max_backoff) for n in range(self.attempts - 1))
        return float(sum(waits))
