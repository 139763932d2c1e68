"""Retry and stall policy as values: "wait how long, or give up?" and "is this transfer stalled?".

Nothing here sleeps or reads a clock: the caller passes ``now`` and a ``random.Random`` and awaits
the delay itself (urllib3's ``Retry`` without its ``sleep``).

Backoff is exponential with full jitter, ``uniform(0, min(cap, base * 2**(attempt-1)))``, floored at
``base / 2`` so a retry never hammers at once. A server's ``Retry-After`` (seconds or HTTP-date)
replaces the computed delay, capped at ``retry_after_cap_s`` so a hostile value cannot park a run
for a day.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

__all__ = ["RetryPolicy", "StallDetector", "StallRule", "parse_retry_after"]


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    Negative or unparseable values give None; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    import email.utils  # here: 6 ms of imports, for the rare Retry-After given as a date

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one entry's transient failures.

    Attributes:
        max_attempts: attempts per entry, the first included (so 10 = 1 try + 9 retries).
        base_s: first backoff step in seconds.
        cap_s: largest computed backoff.
        retry_after_cap_s: largest ``Retry-After`` honoured; longer ones are clipped to it.
    """

    max_attempts: int = 10
    base_s: float = 1.0
    cap_s: float = 60.0
    retry_after_cap_s: float = 300.0

    def delay(
        self, attempt: int, *, retry_after_s: float | None, rng: random.Random
    ) -> float | None:
        """Delay before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed.

        Returns None when the budget is spent.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.retry_after_cap_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return max(self.base_s / 2, rng.uniform(0, ceiling)) if ceiling > 0 else 0.0


@dataclass(frozen=True, slots=True)
class StallRule:
    """A transfer is stalled when, after ``warmup_s``, it moved fewer than ``min_bytes_per_s``
    on average over the last ``window_s``. The socket read timeout catches total silence; this
    catches a drip that keeps resetting the read timeout."""

    min_bytes_per_s: float = 1024.0
    window_s: float = 30.0
    warmup_s: float = 10.0


@dataclass(slots=True)
class StallDetector:
    """Feed it ``(now, bytes so far)``; it says when the rule is broken. One per request.

    Called for every network chunk, so it is O(1): it keeps at most one mark per
    ``_MARK_EVERY_S`` seconds of the window, in a deque.
    """

    rule: StallRule
    started: float
    _marks: deque[tuple[float, int]] = field(default_factory=deque)

    def stalled(self, now: float, total_bytes: int) -> bool:
        marks = self._marks
        if not marks or now - marks[-1][0] >= _MARK_EVERY_S:
            marks.append((now, total_bytes))
        horizon = now - self.rule.window_s
        while len(marks) > 2 and marks[1][0] <= horizon:
            marks.popleft()
        if now - self.started < self.rule.warmup_s + self.rule.window_s:
            return False
        first_time, first_bytes = marks[0]
        elapsed = now - first_time
        if elapsed < self.rule.window_s * 0.5:
            return False
        return (total_bytes - first_bytes) / elapsed < self.rule.min_bytes_per_s


_MARK_EVERY_S = 0.5
