"""``dbqueue/backoff.py``: the seed's RetryConfig (storage retries) and Celery's
``retry_backoff`` countdown with full jitter."""

from __future__ import annotations

import pytest

from dbqueue import backoff
from dbqueue.backoff import NO_RETRY, RetryConfig, task_backoff

# --- RetryConfig -------------------------------------------------------------------------------


def test_defaults_are_the_seeds() -> None:
    config = RetryConfig()
    assert (
        config.max_attempts,
        config.initial_backoff,
        config.max_backoff,
        config.multiplier,
        config.jitter,
    ) == (5, 0.1, 5.0, 2.0, 0.1)


def test_no_retry_means_a_single_attempt() -> None:
    assert NO_RETRY.max_attempts == 1


def test_delay_grows_by_the_multiplier_without_jitter() -> None:
    config = RetryConfig(initial_backoff=0.5, max_backoff=100.0, multiplier=3.0, jitter=0.0)
    assert [config.delay(n) for n in range(1, 5)] == [0.5, 1.5, 4.5, 13.5]


def test_delay_is_capped_at_max_backoff() -> None:
    config = RetryConfig(initial_backoff=1.0, max_backoff=5.0, multiplier=2.0, jitter=0.0)
    assert [config.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert config.delay(500) == 5.0, "a huge attempt number must not overflow"


@pytest.mark.parametrize("attempt", [1, 3, 10])
def test_delay_stays_within_the_jitter_bounds(attempt: int) -> None:
    config = RetryConfig(initial_backoff=1.0, max_backoff=6.0, multiplier=2.0, jitter=0.25)
    base = min(6.0, 2.0 ** (attempt - 1))
    samples = [config.delay(attempt) for _ in range(300)]
    assert all(base * 0.75 <= s <= base * 1.25 for s in samples)
    assert len(set(samples)) > 1, "jitter must actually vary the delay"


def test_jitter_extremes(monkeypatch: pytest.MonkeyPatch) -> None:
    config = RetryConfig(initial_backoff=2.0, max_backoff=10.0, multiplier=2.0, jitter=0.5)
    monkeypatch.setattr(backoff.random, "uniform", lambda low, high: low)
    assert config.delay(2) == 2.0
    monkeypatch.setattr(backoff.random, "uniform", lambda low, high: high)
    assert config.delay(2) == 6.0


def test_delay_is_never_negative() -> None:
    config = RetryConfig(initial_backoff=0.0, max_backoff=0.0, jitter=1.0)
    assert all(config.delay(n) == 0.0 for n in range(1, 5))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_backoff": -0.1}, "backoff"),
        ({"max_backoff": -1.0}, "backoff"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_invalid_configs_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryConfig(**options)


@pytest.mark.parametrize("multiplier", [0.0, -2.0])
def test_non_positive_multiplier_is_refused(multiplier: float) -> None:
    with pytest.raises(ValueError, match="multiplier"):
        RetryConfig(multiplier=multiplier)


# --- task_backoff (Celery's retry_backoff) -------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "retries", "maximum", "expected"),
    [
        (1, 0, 600, 1),
        (1, 1, 600, 2),
        (1, 3, 600, 8),
        (2, 3, 600, 16),
        (5, 4, 600, 80),
        (1, 10, 600, 600),
        (3, 2, 10, 10),
        (1, 200, 600, 600),
    ],
)
def test_countdown_is_min_of_maximum_and_factor_times_two_to_the_retries(
    factor, retries, maximum, expected
) -> None:
    assert task_backoff(factor, retries, maximum, full_jitter=False) == expected


def test_countdown_is_an_integer_number_of_seconds() -> None:
    value = task_backoff(1.5, 1, 600, full_jitter=False)
    assert value == 3 and isinstance(value, int)


@pytest.mark.parametrize(("factor", "retries", "maximum"), [(1, 3, 600), (2, 5, 20), (1, 0, 600)])
def test_full_jitter_is_uniform_between_zero_and_the_countdown(factor, retries, maximum) -> None:
    ceiling = min(maximum, factor * 2**retries)
    samples = [task_backoff(factor, retries, maximum, full_jitter=True) for _ in range(400)]
    assert all(isinstance(s, int) and 0 <= s <= ceiling for s in samples)
    assert set(samples) == set(range(ceiling + 1)), "every integer in [0, ceiling] is reachable"


def test_full_jitter_uses_randrange_up_to_and_including_the_ceiling(monkeypatch) -> None:
    calls = []

    def fake_randrange(stop: int) -> int:
        calls.append(stop)
        return stop - 1

    monkeypatch.setattr(backoff.random, "randrange", fake_randrange)
    assert task_backoff(2, 2, 600, full_jitter=True) == 8
    assert calls == [9]
