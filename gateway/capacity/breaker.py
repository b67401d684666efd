"""Circuit breaker for the Redis link: closed -> open -> half-open -> closed.

Closed: calls go to Redis; ``failures`` consecutive errors or timeouts open it. Open: no call
goes to Redis for ``cooloff`` seconds. Half-open: one probe (the tracker's monitor pings);
success closes it, failure opens it again for another cool-off. Pure state over an injected
clock, so it is tested without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """State of one dependency's health, from the outcomes reported to it.

    >>> now = [0.0]
    >>> b = CircuitBreaker(failures=2, cooloff=1.0, clock=lambda: now[0])
    >>> b.failure(), b.failure(), b.state
    (False, True, 'open')
    >>> now[0] = 1.0; b.state
    'half-open'
    >>> b.success(), b.state
    (True, 'closed')
    """

    def __init__(self, *, failures: int = 3, cooloff: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = max(1, failures)
        self.cooloff = cooloff
        self._clock = clock
        self._count = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.cooloff else "open"

    def allows(self) -> bool:
        """Whether ordinary calls may go to the dependency (probes bypass this)."""
        return self._opened_at is None

    def retry_in(self) -> float:
        """Seconds until the next probe (0 when closed or already half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooloff - self._clock())

    def success(self) -> bool:
        """Record a success; True when this closed the breaker."""
        was_open = self._opened_at is not None
        self._count = 0
        self._opened_at = None
        return was_open

    def failure(self) -> bool:
        """Record an error or timeout; True when this opened a closed breaker."""
        if self._opened_at is not None:
            if self.state == "half-open":
                self._opened_at = self._clock()  # the probe failed: another cool-off
            return False
        self._count += 1
        if self._count >= self.failures:
            self._opened_at = self._clock()
            return True
        return False
