"""Tumbling one-minute windows of an event's audience curve, computed exactly when a window closes.

Rather than keeping a copy of every join and departure per window (and retracting them when a late-arriving
record changes a session), each window only remembers *which attendees* had a transition in it. When the
watermark has passed the window, every transition in it is final, and the window is computed from those
attendees' current sessions plus the count carried over from the previous window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streams.domain.presence import LEAVE, TIMEOUT, Session

WINDOW_MS = 60_000
INFINITY = 1 << 62

# Interaction counters kept per window, in this order.
WINDOW_TYPES = ("join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click")


def window_of(ts: int) -> int:
    return ts - ts % WINDOW_MS


def close_window(
    start: int,
    before: int,
    members: Iterable[Sequence[Session]],
    next_members: Iterable[Sequence[Session]],
) -> tuple[dict, int]:
    """Compute the audience figures of [start, start+60s).

    `before` is the number of attendees present just before `start`; `members` the session lists of attendees
    with a transition in the window (open sessions as (start, -, INFINITY, -)); `next_members` those with a
    transition in the next window (only transitions exactly at the window end matter there).
    Returns the figures and the count present just before the next window.
    """
    end = start + WINDOW_MS
    at_start = 0  # transitions exactly at `start`
    inside: dict[int, int] = {}  # t in (start, end) -> net change
    joins = leaves = timeouts = 0
    newcomers = 0  # attendees not present at `start` with a session overlapping the window
    for sessions in members:
        present_at_start = False
        overlaps = False
        for s_start, _, depart, kind in sessions:
            if s_start <= start < depart:
                present_at_start = True
            if s_start < end and depart > start:
                overlaps = True
            if start <= s_start < end:
                joins += 1
                if s_start == start:
                    at_start += 1
                else:
                    inside[s_start] = inside.get(s_start, 0) + 1
            if start <= depart < end:
                if kind == LEAVE or kind == TIMEOUT:
                    leaves += 1
                    if kind == TIMEOUT:
                        timeouts += 1
                if depart == start:
                    at_start -= 1
                else:
                    inside[depart] = inside.get(depart, 0) - 1
        if overlaps and not present_at_start:
            newcomers += 1
    at_end = 0
    for sessions in next_members:
        for s_start, _, depart, _ in sessions:
            if s_start == end:
                at_end += 1
            if depart == end:
                at_end -= 1
    current = before + at_start
    attendees_start = peak = current
    for t in sorted(inside):
        current += inside[t]
        peak = max(peak, current)
    figures = {
        "window_start": start,
        "window_end": end,
        "joins": joins,
        "leaves": leaves,
        "timeouts": timeouts,
        "active_attendees": attendees_start + newcomers,
        "attendees_start": attendees_start,
        "attendees_end": current + at_end,
        "peak_concurrent": peak,
        "drop_off_ratio": leaves / attendees_start if attendees_start else 0.0,
    }
    return figures, current
