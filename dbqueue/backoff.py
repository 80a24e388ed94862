"""Backoff arithmetic, written once: task retry countdowns and storage retry delays."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryConfig:
    """How a failing database call is retried (the seed's RetryConfig, same defaults).

    ``max_attempts`` counts every try including the first; 1 disables retrying.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryConfig.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryConfig backoffs must be >= 0")
        if self.multiplier <= 0:
            raise ValueError(f"RetryConfig.multiplier must be > 0, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryConfig.jitter must be within 0..1, got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed try (1-based), jitter included."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))


#: Used by ``DisableRetry``-style settings: one try, no waiting.
NO_RETRY = RetryConfig(max_attempts=1)


def task_backoff(factor: float, retries: int, maximum: float, full_jitter: bool) -> int:
    """Celery's ``retry_backoff`` countdown: ``min(maximum, factor * 2**retries)``.

    With ``full_jitter`` the countdown is a uniform random integer between 0 and that value, so
    a burst of failures does not retry in lockstep.
    """
    countdown = min(maximum, factor * (2**retries))
    if full_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0, int(countdown))
