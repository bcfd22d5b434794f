"""Figures per registration channel: which promotion channel brought people who attended, stayed and engaged.

Plain Python, no framework. The event's snapshot pass over its attendees feeds each one into a `ChannelTally`
(one call per attendee, so the figures cost no second pass), and `figures()` turns the sums into the rows of the
snapshot's and summary's `channels` (docs/semantics.md "Figures per registration channel"). The batch reference in
tests/ computes the same rows independently.

Channel labels come from the sources (a registration's `channel`, at most 64 characters), so their number is
bounded here: the `max_channels` named channels with the most registrations are kept (those with a cost in the
event's `channel_costs` first) and the rest are folded into `other`; `walk_in` (attendees without a registration)
and `unknown` (registrations without a channel) are always rows of their own. That also bounds the `channel` label
of the per-channel Prometheus series.
"""

from __future__ import annotations

from streams.domain.scoring import GRADES, MQL_GRADES

WALK_IN = "walk_in"  # attendees (and leads) without a registration
UNKNOWN = "unknown"  # registrations without a channel (or an empty one)
OTHER = "other"  # named channels beyond the cap
RESERVED = (WALK_IN, UNKNOWN, OTHER)

# Positions in a tally row.
REGISTRATIONS, ATTENDEES, ATTENDED_REGISTRANTS, DWELL_MS, SCORE_SUM, GRADE_COUNTS = range(6)


def channel_of(registered: bool, channel: str | None) -> str:
    """The row an attendee counts in: their registration's channel, `unknown` without one, `walk_in` unregistered."""
    if not registered:
        return WALK_IN
    return channel or UNKNOWN


def _row() -> list:
    return [0, 0, 0, 0, 0.0, dict.fromkeys(GRADES, 0)]


class ChannelTally:
    """Per-channel sums of one pass over an event's attendees."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[str, list] = {}

    def add(self, registered: bool, channel: str | None, attended: bool, dwell_ms: int, score: float,
            grade: str) -> None:
        """One lead (an attendee who registered or did anything): present or not, with their dwell, score, grade.
        (Once per attendee per snapshot: kept to a few operations.)"""
        key = (channel or UNKNOWN) if registered else WALK_IN
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = _row()
        row[REGISTRATIONS] += registered
        if attended:
            row[ATTENDEES] += 1
            row[ATTENDED_REGISTRANTS] += registered
            row[DWELL_MS] += dwell_ms
            row[SCORE_SUM] += score
        row[GRADE_COUNTS][grade] += 1

    def figures(self, max_channels: int, costs: object = None) -> list[dict]:
        """The rows, sorted by channel. `costs`: the event's channel_costs (channel -> cost in its currency); each
        channel in it gets a row even before anyone registered through it. Named channels beyond the cap are folded
        into `other`: channels with a cost are kept first, then those with the most registrations, ties by name."""
        costs = costs if isinstance(costs, dict) else {}
        rows = dict(self.rows)
        for name in costs:
            if name not in rows:
                rows[name] = _row()
        named = sorted((k for k in rows if k not in RESERVED),
                       key=lambda k: (k not in costs, -rows[k][REGISTRATIONS], k))
        if len(named) > max_channels:
            base = rows.get(OTHER)
            into = rows[OTHER] = _row() if base is None else [*base[:GRADE_COUNTS], dict(base[GRADE_COUNTS])]
            for k in named[max_channels:]:
                folded = rows.pop(k)
                for i in range(GRADE_COUNTS):
                    into[i] += folded[i]
                for g, n in folded[GRADE_COUNTS].items():
                    into[GRADE_COUNTS][g] += n
        return [_figures(k, rows[k], costs.get(k)) for k in sorted(rows)]


def _figures(channel: str, row: list, cost: float | None) -> dict:
    registrations, attendees, attended, dwell_ms, score_sum, grades = row
    mqls = sum(grades[g] for g in MQL_GRADES)
    return {
        "channel": channel,
        "registrations": registrations,
        "attendees": attendees,
        "attendance_rate": attended / registrations if registrations else None,
        "avg_dwell_seconds": dwell_ms / 1000 / attendees if attendees else 0.0,
        "engagement_score": score_sum / attendees if attendees else 0.0,
        "leads_by_grade": grades,
        "mqls": mqls,
        "cost": cost,
        "cost_per_registration": cost / registrations if cost is not None and registrations else None,
        "cost_per_attendee": cost / attendees if cost is not None and attendees else None,
        "cost_per_mql": cost / mqls if cost is not None and mqls else None,
    }
