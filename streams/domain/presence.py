"""Presence and dwell of one attendee, exact under reordering within the allowed lateness.

Presence is a pure function of an attendee's presence records sorted by (ts, rank): see docs/semantics.md "Presence".
Streaming it exactly, without keeping every heartbeat, works in two layers:

* a *checkpoint*: the fold state after all records older than the watermark W (no non-late record can ever
  sort before them again), plus the sessions that fold closed (final);
* a *tail*: the few sorted records at or after W, re-folded on every change (usually one or two entries).

An attendee is mostly this fold: Attendee (event.py) extends Presence, so both are one object per attendee, and
persists its fields.

The derived view (tail sessions and the open session) is recomputed from checkpoint + tail whenever the attendee
is touched or the clock times them out, so a record arriving out of order simply lands in its sorted place.
"""

from __future__ import annotations

from collections.abc import Sequence

# Session kinds (how a presence interval ended).
LEAVE, TIMEOUT, ENDED = 0, 1, 2
# Sort rank of a presence record at equal ts: a leave before anything else, so leave+rejoin at the same ms
# keeps the attendee present. A join is RANK_OTHER, any other in-room record RANK_SIGNAL (a sign of life); the two
# fold alike except in join_leave presence, where only joins open a session (state written before signals had a
# rank of their own holds them as RANK_OTHER).
RANK_LEAVE, RANK_OTHER, RANK_SIGNAL = 0, 1, 2
# The idle timeout of an event in join_leave presence (its source sends no heartbeats): never reached.
NO_IDLE = 1 << 62

# A session: (start, dwell_end, depart, kind). Dwell counts [start, dwell_end); the audience curve counts the
# attendee in [start, depart) -- for an idle timeout dwell stops at the last sign of life but the attendee only
# leaves the room count once the timeout has elapsed.
Session = tuple[int, int, int, int]


class Presence:
    """Checkpointed presence fold of one attendee (the base of Attendee). Times are epoch ms."""

    __slots__ = (
        "ck_ever",
        "ck_last",
        "ck_present",
        "ck_start",
        "final_dwell",
        "final_sessions",
        "open_last",
        "open_start",
        "tail",
        "tail_sessions",
    )

    def __init__(self) -> None:
        self.ck_present = False
        self.ck_start = 0
        self.ck_last = 0
        self.ck_ever = False
        # Both session lists are usually empty: () is shared instead of an empty list per attendee.
        self.final_sessions: Sequence[Session] = ()  # closed by the checkpoint fold; pruned once windows emitted
        self.final_dwell = 0  # dwell of every final session, including pruned ones
        # The records at or after the watermark of insertion, sorted by (ts, rank) and flat: ts, rank, ts, rank, ...
        # One tuple per attendee rather than a list plus a tuple per record (it usually holds one or two records).
        self.tail: tuple[int, ...] = ()
        # Derived view (recomputed by refresh()).
        self.tail_sessions: Sequence[Session] = ()
        self.open_start: int | None = None
        self.open_last = 0

    # --- updates ------------------------------------------------------------------------
    def add(self, ts: int, rank: int) -> None:
        """Insert a non-late presence record (duplicates are filtered before this)."""
        tail = self.tail
        i = len(tail)
        while i and (tail[i - 2], tail[i - 1]) > (ts, rank):  # records mostly come in order: i stays at the end
            i -= 2
        self.tail = tail[:i] + (ts, rank) + tail[i:]

    def settle(self, watermark: int, idle: int, ended: int | None, joins_only: bool = False) -> None:
        """Fold tail records older than the watermark into the checkpoint (they can no longer move). `joins_only`
        (join_leave presence): signs of life neither open nor extend a session."""
        tail = self.tail
        n = 0
        while n < len(tail) and tail[n] < watermark:
            n += 2
        if not n:
            return
        present, start, last = self.ck_present, self.ck_start, self.ck_last
        for i in range(0, n, 2):  # (indexing the flat tail: no pair objects on the hot path)
            ts, rank = tail[i], tail[i + 1]
            if ended is not None and ts > ended:
                break
            if joins_only and rank == RANK_SIGNAL:
                continue
            if present and ts - last >= idle:
                self._final((start, last, last + idle, TIMEOUT))
                present = False
            if rank == RANK_LEAVE:
                if present:
                    self._final((start, ts, ts, LEAVE))
                    present = False
            else:
                if not present:
                    present, start = True, ts
                    self.ck_ever = True
                last = ts
        self.ck_present, self.ck_start, self.ck_last = present, start, last
        self.tail = tail[n:]

    def _final(self, session: Session) -> None:
        sessions = self.final_sessions
        if isinstance(sessions, list):
            sessions.append(session)
        else:
            self.final_sessions = [session]
        self.final_dwell += session[1] - session[0]

    def refresh(self, clock: int, idle: int, ended: int | None, joins_only: bool = False) -> None:
        """Recompute the derived view: sessions closed by the tail fold, and the open session if any."""
        present, start, last = self.ck_present, self.ck_start, self.ck_last
        sessions: list[Session] = []
        tail = self.tail
        for i in range(0, len(tail), 2):
            ts, rank = tail[i], tail[i + 1]
            if ended is not None and ts > ended:
                break
            if joins_only and rank == RANK_SIGNAL:
                continue
            if present and ts - last >= idle:
                sessions.append((start, last, last + idle, TIMEOUT))
                present = False
            if rank == RANK_LEAVE:
                if present:
                    sessions.append((start, ts, ts, LEAVE))
                    present = False
            else:
                if not present:
                    present, start = True, ts
                last = ts
        self.open_start = None
        if present:
            if ended is not None:
                if ended - last >= idle:
                    sessions.append((start, last, last + idle, TIMEOUT))
                else:
                    sessions.append((start, ended, ended, ENDED))
            elif clock - last >= idle:
                sessions.append((start, last, last + idle, TIMEOUT))
            else:
                self.open_start, self.open_last = start, last
        self.tail_sessions = sessions or ()

    def prune(self, before: int) -> None:
        """Forget final sessions that departed before `before` (their windows are emitted; dwell is kept)."""
        if self.final_sessions and self.final_sessions[0][2] < before:
            self.final_sessions = [s for s in self.final_sessions if s[2] >= before] or ()

    # --- reading ------------------------------------------------------------------------
    @property
    def ever_present(self) -> bool:
        return self.ck_ever or bool(self.tail_sessions) or self.open_start is not None

    def sessions(self) -> Sequence[Session]:
        """Closed sessions still relevant to unemitted windows, oldest first."""
        if self.final_sessions and self.tail_sessions:
            return [*self.final_sessions, *self.tail_sessions]
        return self.final_sessions or self.tail_sessions

    def closed_dwell(self) -> int:
        return self.final_dwell + sum(s[1] - s[0] for s in self.tail_sessions)

    def is_present(self, clock: int, idle: int) -> bool:
        return self.open_start is not None and clock - self.open_last < idle

    def dwell(self, clock: int, idle: int) -> int:
        """Dwell in ms at `clock`: an open session grows with the clock until it times out at its last sign of life."""
        total = self.closed_dwell()
        if self.open_start is not None:
            total += (clock if clock - self.open_last < idle else self.open_last) - self.open_start
        return total

    def settled_dwell(self) -> int:
        """Dwell up to the last sign of life: never shrinks when an attendee times out (for counters)."""
        total = self.closed_dwell()
        if self.open_start is not None:
            total += self.open_last - self.open_start
        return total
