"""When to publish live snapshots: every `interval_s`, unless that would starve the input.

A snapshot walks every attendee of an event (each score and grade depends on the clock), so a round over all live
events costs in proportion to the audience: about 126 ms per 50,000 present attendees, 2.5 s for 1,000,000, on
this project's 2-core machine. Rounds are spaced so that they take at most `max_share` of the worker's time; the
live figures of a huge audience then refresh less often instead of the input falling behind.
"""

from __future__ import annotations


class SnapshotPacing:
    def __init__(self, interval_s: float, max_share: float) -> None:
        self.interval_s = interval_s
        self.max_share = max_share
        self.last_start = float("-inf")
        self.last_round_s = 0.0  # how long the last round took (exported: livepulse_snapshot_round_seconds)

    @property
    def spacing_s(self) -> float:
        """Time from one round's start to the next (exported: livepulse_snapshot_interval_seconds)."""
        return max(self.interval_s, self.last_round_s / self.max_share)

    def due(self, now: float) -> bool:
        return now - self.last_start >= self.spacing_s

    def done(self, started: float, took_s: float) -> None:
        self.last_start, self.last_round_s = started, took_s
