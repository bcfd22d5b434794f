"""State of one webinar: de-duplication, presence, windows and the figures published about it.

Plain Python, no framework: the Faust wiring feeds records in, calls `advance()` once per batch, persists what
`take_writes()` returns (after a batch, or once per checkpoint of several batches) before the next `advance()`,
and publishes what `snapshot()`, `take_closed_windows()`, `summary()` and `leads()` return. Every rule is in
docs/semantics.md; the batch reference in tests/ implements the same rules independently.

Idempotence under at-least-once delivery: an attendee remembers recent interaction ids together with the
(topic, offset) they came from. The same id at the same offset is a redelivery after a restart: the attendee
part is already in its state and is skipped, while the event part (minute-window counters) is guarded by the
highest offset it has applied. The same id at another offset is a real duplicate and changes nothing. And as
an event lives on one partition, any interaction at an offset not above the highest one the event has applied
is a redelivery too (this also covers records older than the id memory, e.g. registrations days ahead).

What is persisted (`take_writes()`, in this order): one *ids* record per persist with the ids remembered since,
the attendees touched, each minute window once as it is emitted, tombstones of ids records wholly behind the
horizon, and the event record last. Ids and windows are written once rather than with every attendee or event
record: in a live webinar nearly every record touches an attendee, and re-writing their id memory (and the
event's whole attendance curve) each time made state writes several times bigger than the input.

A crash while one persist's state records are written leaves any prefix of them (they are not one atomic
write). Replaying the batches since the previous persist must still be exact, so nothing a record holds may
depend on a later record of the same persist: each attendee keeps the highest offset applied to it (an older one
is a redelivery even if its id has left the memory; an id remembered at that very offset is the same record,
applied or not), ids are forgotten by the clock of the last *persisted* event record (and an id older than the
horizon counts as unseen wherever it is still held), and sessions leave memory only after the persist that wrote
their window.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import add
from sys import intern
from typing import Any

from streams.domain.channels import ChannelTally
from streams.domain.presence import NO_IDLE, RANK_LEAVE, RANK_OTHER, RANK_SIGNAL, Presence, Session
from streams.domain.scoring import (
    GRADES,
    MQL_GRADES,
    Grades,
    Weights,
    engagement_score,
    grade,
)
from streams.domain.windows import WINDOW_MS, WINDOW_TYPES, close_window, window_of

TYPES = ("registration", "join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click")
TYPE_INDEX = {t: i for i, t in enumerate(TYPES)}
REGISTRATION, JOIN, LEAVE, HEARTBEAT, CHAT, QUESTION, POLL_VOTE, REACTION, CTA_CLICK = range(9)
# Position of each interaction type in a window's counters (registrations are not counted per window).
WINDOW_SLOT = {TYPE_INDEX[t]: i for i, t in enumerate(WINDOW_TYPES)}
SESSION_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200)

# Outcome of applying one interaction.
(APPLIED, LATE, DUPLICATE, REDELIVERED, CAPPED_ATTENDEES, CAPPED_INTERACTIONS, CAPPED_POLLS, CAPPED_ACCOUNTS,
 CAPPED_EVENT_POLLS, CAPPED_WORKER_ATTENDEES) = range(10)
# Most bytes of one ids record (JSON): well under Kafka's 1 MiB default max.message.bytes, whatever the ids hold.
IDS_RECORD_BYTES = 512 * 1024
MAX_KEY_ACCOUNTS = 10_000  # the schema's maxItems of one record's key_accounts; also the most an event keeps


class Budget:
    """A count shared by the events (or ledgers) of one worker, with its limit: a worker-wide cap."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.held = 0
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Params:
    """The semantic parameters, in ms (Settings holds the operator-facing seconds)."""

    idle_ms: int = 120_000
    lateness_ms: int = 30_000
    horizon_ms: int = 600_000
    weights: Weights = field(default_factory=Weights)
    drop_off_minute_ratio: float = 0.1
    grades: Grades = field(default_factory=Grades)
    max_attendees: int = 250_000
    max_interactions: int = 20_000
    max_span_ms: int = 3 * 86_400_000
    max_key_accounts: int = MAX_KEY_ACCOUNTS
    max_key_accounts_bytes: int = 262_144
    max_polls: int = 64  # distinct polls per attendee
    max_accounts: int = 8  # distinct account ids per attendee
    max_polls_seen: int = 256  # distinct polls per event
    max_channels: int = 20

    @classmethod
    def from_settings(cls, s) -> Params:
        w = s.score
        return cls(
            idle_ms=s.idle_timeout_ms,
            lateness_ms=s.allowed_lateness_ms,
            horizon_ms=s.dedup_horizon_ms,
            weights=Weights(w.dwell, w.chat, w.question, w.poll, w.cta),
            drop_off_minute_ratio=s.drop_off_minute_ratio,
            grades=Grades(s.grade.a, s.grade.b, s.grade.c),
            max_attendees=s.max_attendees_per_event,
            max_interactions=s.max_interactions_per_attendee,
            max_span_ms=round(s.max_event_span_s * 1000),
            max_key_accounts_bytes=s.max_key_accounts_bytes,
            max_polls=s.max_polls_per_attendee,
            max_accounts=s.max_accounts_per_attendee,
            max_polls_seen=s.max_polls_per_event,
            max_channels=s.max_channels_per_event,
        )


# Attendee.counts vectors of one or two records (a join; a registration and a join: much of a live room) are
# shared by every attendee with those counts; any other vector is a tuple of the attendee's own.
_NO_COUNTS = (0,) * 9
_ONE = [tuple(int(i == kind) for i in range(9)) for kind in range(9)]
_SHARED_COUNTS = {c: c for c in _ONE + [tuple(map(add, a, b)) for a in _ONE for b in _ONE]}
ID_FIELDS = 4  # an id entry in Attendee.ids: id, topic, offset, ts
ID_RECORD_FIELDS = 5  # an id entry in an ids record: id, attendee id, topic, offset, ts
# First item of an attendee record: 3 since ids have records of their own, 2 the flat layout with the attendee's
# ids inside (older records start with a list).
DUMP_LAYOUT = 3
# Kinds of state records, in the order one batch writes them (take_writes).
IDS, ATTENDEE, WINDOW, EVENT = range(4)


class Attendee(Presence):
    """One attendee of one event: the presence fold it extends, plus counters, accounts and recent ids.

    Memory matters here (a worker holds a million of these): one object, flat containers, shared empty ones."""

    __slots__ = ("accounts", "channel", "counts", "ids", "key_flag", "polls", "registered", "upto", "upto_rekeyed")

    def __init__(self) -> None:
        super().__init__()
        self.registered = False
        self.key_flag = False
        # Tuples, not lists: most attendees have one account and no poll, and () is shared (memory per attendee).
        self.accounts: tuple[str, ...] = ()  # distinct account ids seen, first first (the lead shows the first)
        self.channel: str | None = None
        self.counts: tuple[int, ...] = _NO_COUNTS  # records per type (TYPES order), replaced by count()
        self.polls: tuple[str, ...] = ()  # distinct poll ids voted
        # Recent ids for de-duplication in arrival order, pruned by the horizon, flat: id, topic, offset, ts, id, ...
        # (one list per attendee rather than a tuple per id besides; it usually holds a single id).
        self.ids: list = []
        # Highest offset applied to this attendee from the interactions (0) and rekeyed (1) topics.
        self.upto = self.upto_rekeyed = -1

    def count(self, kind: int) -> None:
        """One more record of type `kind`."""
        bumped = list(self.counts)
        bumped[kind] += 1
        counts = tuple(bumped)
        self.counts = _SHARED_COUNTS.get(counts, counts)

    def applied_upto(self, topic: int) -> int:
        return self.upto if topic == 0 else self.upto_rekeyed if topic == 1 else -1

    def mark_applied(self, topic: int, offset: int) -> None:
        if topic == 0:
            self.upto = offset
        elif topic == 1:
            self.upto_rekeyed = offset

    def remember_id(self, rid: str, topic: int, offset: int, ts: int) -> None:
        if self.ids:
            self.ids += (rid, topic, offset, ts)
        else:
            self.ids = [rid, topic, offset, ts]  # (a list of exactly one entry: no room for growth)

    def find_id(self, rid: str) -> tuple[int, int, int] | None:
        """(topic, offset, ts) remembered with `rid`, or None."""
        ids = self.ids
        for i in range(0, len(ids), ID_FIELDS):
            if ids[i] == rid:
                return ids[i + 1], ids[i + 2], ids[i + 3]
        return None

    def drop_id(self, rid: str) -> None:
        ids = self.ids
        for i in range(0, len(ids), ID_FIELDS):
            if ids[i] == rid:
                del ids[i:i + ID_FIELDS]
                return

    def forget_ids(self, before: int) -> Sequence[str]:
        """Drop the leading ids (arrival order) with a ts before `before`; returns the ids dropped.

        O(dropped) per call: an older id arriving after a newer one waits for it, and meanwhile the lookup
        rule in apply_interaction already treats it as forgotten, so the results do not depend on pruning."""
        ids = self.ids
        if not ids or ids[3] >= before:  # the usual case, once per attendee written: nothing to forget
            return ()
        n = 0
        while n < len(ids) and ids[n + 3] < before:  # (ids[n + 3]: the ts of the entry at n)
            n += ID_FIELDS
        dropped = ids[0:n:ID_FIELDS]
        del ids[:n]
        return dropped

    def id_count(self) -> int:
        return len(self.ids) // ID_FIELDS

    @property
    def account_id(self) -> str | None:
        return self.accounts[0] if self.accounts else None

    def is_key_account(self, key_accounts: set[str]) -> bool:
        """Any record flagged key_account, or any account id of theirs in the event's key accounts."""
        return self.key_flag or any(a in key_accounts for a in self.accounts)

    def has_activity(self) -> bool:
        """Any record other than a registration (makes the attendee a lead even if never present)."""
        return any(self.counts[1:])

    def dump(self) -> list:
        """The attendee record (flat; the derived presence view is not persisted: refresh() rebuilds it, and the
        ids are in the event's ids records)."""
        return [
            DUMP_LAYOUT, self.ck_present, self.ck_start, self.ck_last, self.ck_ever, self.final_sessions,
            self.final_dwell, self.tail, self.registered, self.key_flag, self.accounts, self.channel, self.counts,
            self.polls, self.upto, self.upto_rekeyed,
        ]

    @classmethod
    def load(cls, data: list) -> Attendee:
        """An attendee from its record; records of layout 2 and older bring their ids along (EventState.from_parts
        moves them to an ids record)."""
        # Fields are set directly below (a restore or takeover rebuilds up to a million of these); cls() and not
        # cls.__new__, which the compiled build (docs/performance.md "The compiled build") cannot call.
        if type(data[0]) is list:
            return cls._load_nested(data)
        a = cls()
        if data[0] == 2:
            (_, a.ck_present, a.ck_start, a.ck_last, a.ck_ever, sessions, a.final_dwell, tail, a.registered,
             a.key_flag, accounts, a.channel, counts, polls, a.ids, a.upto, a.upto_rekeyed) = data
        else:
            (_, a.ck_present, a.ck_start, a.ck_last, a.ck_ever, sessions, a.final_dwell, tail, a.registered,
             a.key_flag, accounts, a.channel, counts, polls, a.upto, a.upto_rekeyed) = data
            a.ids = []
        a.final_sessions = list(map(tuple, sessions)) if sessions else ()
        a.tail = tuple(tail)
        a.tail_sessions, a.open_start, a.open_last = (), None, 0  # derived view: empty until refresh()
        a.accounts = tuple(map(intern, accounts)) if accounts else ()
        counts = tuple(counts)
        a.counts = _SHARED_COUNTS.get(counts, counts)
        a.polls = tuple(map(intern, polls)) if polls else ()
        return a

    @classmethod
    def _load_nested(cls, data: list) -> Attendee:
        """A record of the layout before layout 2 (written by older versions; a rolling upgrade restores them):
        [[ck_present, ck_start, ck_last, ck_ever, final_sessions, final_dwell, [[ts, rank], ...]], registered,
        key_flag, accounts, channel, counts, polls, [[id, topic, offset, ts], ...], upto, upto_rekeyed]; older
        still: accounts a single id or null, and no upto offsets."""
        presence, registered, key_flag, accounts, channel, counts, polls, ids = data[:8]
        ck_present, ck_start, ck_last, ck_ever, sessions, final_dwell, tail = presence
        if not isinstance(accounts, list):
            accounts = [] if accounts is None else [accounts]
        if len(data) > 8:
            upto, upto_rekeyed = data[8], data[9]
        else:  # state written before per-attendee offsets: the offsets its ids remember
            upto = max((offset for _, topic, offset, _ in ids if topic == 0), default=-1)
            upto_rekeyed = max((offset for _, topic, offset, _ in ids if topic == 1), default=-1)
        return cls.load([2, ck_present, ck_start, ck_last, ck_ever, sessions, final_dwell,
                         [x for record in tail for x in record], registered, key_flag, accounts, channel, counts,
                         polls, [x for entry in ids for x in entry], upto, upto_rekeyed])


class EventState:
    """Everything LivePulse knows about one event_id."""

    def __init__(self, event_id: str, params: Params) -> None:
        self.event_id = event_id
        self.p = params
        self.attendees: dict[str, Attendee] = {}
        self.clock: int | None = None  # max ts of non-duplicate interactions
        self.persisted_clock: int | None = None  # the clock of the last event record handed out to persist
        self.started: int | None = None
        self.ended: int | None = None
        self.first_join: int | None = None  # min ts of non-late joins: the start when no `started` arrives
        self.first_session: int | None = None  # earliest presence seen: where the minute windows begin
        self.meta: dict = {}
        # Presence mode (meta "presence"): "join_leave" when the source sends no heartbeats (docs/semantics.md
        # "Presence").
        self.join_leave = False
        self.idle_ms = params.idle_ms  # the idle timeout of this event: NO_IDLE in join_leave presence
        self._rearm = False
        self.key_accounts: set[str] = set()
        self.key_accounts_bytes = 0  # JSON bytes of key_accounts (capped: they go into the event record)
        self.polls_seen: set[str] = set()
        self.budget: Budget | None = None  # the worker's attendee budget (the Processor sets it)
        self.late = 0
        self.duplicates = 0
        # Interactions by type index over all attendees, counted as they are applied (not persisted: the attendee
        # records hold them): /metrics shows it between snapshots, so a count is fresh as soon as its batch is done.
        self.interaction_totals = [0] * 9
        # Minute windows.
        self.next_window: int | None = None
        self.windows_done = False
        self.before = 0  # attendees present just before next_window
        self.window_counts: dict[int, list[int]] = {}
        self.window_applied: dict[int, int] = {}  # source topic -> highest offset counted in windows
        self.applied: dict[int, int] = {}  # source topic -> highest offset of any interaction applied
        self.curve: list[dict] = []  # every emitted window, for the summary
        self.peak_closed = 0
        self.session_hist = [0] * (len(SESSION_BUCKETS) + 1)
        self.session_sum_ms = 0  # integer ms: the same sum whatever order sessions are observed in
        self.summary_done = False
        self.summary_wall: float | None = None
        # Ids records: remembered ids are persisted once, in one record per batch, dropped when wholly forgotten.
        self._new_ids: list = []  # flat id, attendee id, topic, offset, ts: remembered since the last take_writes
        self._id_records: list[tuple[int, int]] = []  # heap of (newest ts, number) of the ids records persisted
        self._next_id_record = 0
        self._unsaved_windows: list[dict] = []  # emitted windows not handed out to persist yet
        # Not persisted: rebuilt on load / per batch.
        self._id_owner: dict[str, str] = {}  # remembered interaction id -> attendee holding it
        self._members: dict[int, set[str]] = {}
        self._timers: dict[int, str | set[str]] = {}  # idle deadline -> attendee(s) to re-check then
        self._timer_heap: list[int] = []
        # (window end, its members) of emitted windows: sessions in them leave memory only once the window records
        # are persisted (_prune_unsaved -> take_writes -> _prune_due -> the next advance).
        self._prune_unsaved: list[tuple[int, set[str]]] = []
        self._prune_due: list[tuple[int, set[str]]] = []
        self._touched: set[str] = set()
        self._dirty: set[str] = set()
        self._event_dirty = False
        self._closed: list[dict] = []
        self.wall_last = 0.0  # wall time of the last record, for the silent-room clock advance
        self.settled_dwell_ms = 0  # dwell up to each attendee's last sign of life, as of the last snapshot
        self.open_count = 0  # attendees present at the last snapshot

    # ------------------------------------------------------------------ applying records
    def apply_interaction(self, rec: dict, topic: int = 0, offset: int = -1) -> int:
        """Apply one decoded interaction (ts already in ms). `offset` < 0 means "no source offset" (tests)."""
        if offset >= 0:
            # An event lives on one partition: an offset not above the highest applied one is a redelivery
            # after a restart, already in the restored state (even when its id has left the id memory).
            if offset <= self.applied.get(topic, -1):
                return REDELIVERED
            self.applied[topic] = offset
            self._event_dirty = True
        aid = rec["attendee_id"]
        rid = rec["id"]
        ts = rec["ts"]
        kind = TYPE_INDEX[rec["type"]]
        att = self.attendees.get(aid)
        clock = self.clock
        # Ids are unique per event (not per attendee): find the attendee that holds this id, if any.
        owner = self._id_owner.get(rid)
        seen = None  # (topic, offset, ts) remembered with this id
        if owner is not None:
            seen = self.attendees[owner].find_id(rid)
            if seen is not None and clock is not None and clock - seen[2] > self.p.horizon_ms:
                # Forgotten, whenever the pruning happens (an ids record may hold it a little longer).
                self.attendees[owner].drop_id(rid)
                del self._id_owner[rid]
                seen = None
        # This very record, remembered before a restart (its ids record persisted; its attendee's maybe not).
        same = seen is not None and offset >= 0 and seen[0] == topic and seen[1] == offset
        # The attendee record may be newer than the event record (see the module docstring): a record at or
        # below the attendee's own offset is already in it, unless it was a duplicate of an id still held.
        redelivered = att is not None and 0 <= offset <= att.applied_upto(topic) and (seen is None or same)
        p = self.p
        if att is None:
            if len(self.attendees) >= p.max_attendees:
                return CAPPED_ATTENDEES
            if kind == POLL_VOTE and rec["poll_id"] not in self.polls_seen and len(self.polls_seen) >= p.max_polls_seen:
                return CAPPED_EVENT_POLLS
            budget = self.budget
            if budget is not None:
                if budget.held >= budget.limit:
                    return CAPPED_WORKER_ATTENDEES
                budget.held += 1
            att = self.attendees[aid] = Attendee()
        elif not redelivered:
            if sum(att.counts) >= p.max_interactions:  # bounds memory (and id scans)
                return CAPPED_INTERACTIONS
            # Collections that go into the attendee and event records: bounded so those records always fit.
            if kind == POLL_VOTE and (poll := rec["poll_id"]) not in att.polls:
                if poll not in self.polls_seen and len(self.polls_seen) >= p.max_polls_seen:
                    return CAPPED_EVENT_POLLS
                if len(att.polls) >= p.max_polls:
                    return CAPPED_POLLS
            account = rec.get("account_id")
            if account is not None and len(att.accounts) >= p.max_accounts and account not in att.accounts:
                return CAPPED_ACCOUNTS
        if seen is not None and not same:
            self.duplicates += 1
            return DUPLICATE
        late = clock is not None and ts < clock - self.p.lateness_ms
        if not redelivered:
            if not same:
                att.remember_id(rid, topic, offset, ts)
                self._id_owner[rid] = aid
                self._new_ids += (rid, aid, topic, offset, ts)
            if offset >= 0:
                att.mark_applied(topic, offset)
            self._apply_to_attendee(att, rec, kind, ts, late)
            self._dirty.add(aid)
            self._touched.add(aid)
            if late:
                self.late += 1
        if kind == POLL_VOTE and len(self.polls_seen) < p.max_polls_seen:  # (a replay may find it full: see above)
            self.polls_seen.add(rec["poll_id"])
        if not late and kind != REGISTRATION:
            if offset < 0 or offset > self.window_applied.get(topic, -1):
                if offset >= 0:
                    self.window_applied[topic] = offset
                counts = self.window_counts.get(w := window_of(ts))
                if counts is None:
                    counts = self.window_counts[w] = [0] * len(WINDOW_TYPES)
                counts[WINDOW_SLOT[kind]] += 1
            if kind == JOIN and (self.first_join is None or ts < self.first_join):
                self.first_join = ts
        if clock is None or ts > clock:
            self.clock = ts
        self._event_dirty = True
        return REDELIVERED if redelivered else LATE if late else APPLIED

    def _apply_to_attendee(self, att: Attendee, rec: dict, kind: int, ts: int, late: bool) -> None:
        att.count(kind)
        self.interaction_totals[kind] += 1
        # Channels, polls and accounts repeat across attendees: interned, each is held once.
        if kind == REGISTRATION:
            att.registered = True
            if att.channel is None and (channel := rec.get("channel")) is not None:
                att.channel = intern(channel)
        else:
            if kind == POLL_VOTE and rec["poll_id"] not in att.polls:
                att.polls += (intern(rec["poll_id"]),)
            if not late:
                if self.clock is not None and att.tail and att.tail[0] < self.clock - self.p.lateness_ms:  # (else
                    # nothing to fold)
                    att.settle(self.clock - self.p.lateness_ms, self.idle_ms, self.ended, self.join_leave)
                att.add(ts, RANK_LEAVE if kind == LEAVE else RANK_OTHER if kind == JOIN else RANK_SIGNAL)
        if rec.get("key_account") is True:
            att.key_flag = True
        account = rec.get("account_id")
        if account is not None and account not in att.accounts:
            att.accounts += (intern(account),)

    def apply_lifecycle(self, rec: dict) -> int:
        """Apply a decoded `scheduled` / `started` / `ended` record. Idempotent: replays change nothing. Returns
        how many of its new key accounts the caps left out (0: all applied)."""
        kind, ts = rec["type"], rec["ts"]
        for key in META_FIELDS:
            if key in rec:
                self.meta[key] = rec[key]
        if self._presence_changed():
            self._touched.update(self.attendees)  # their unsettled presence folds by the new rule
            self._rearm = True  # back to heartbeat presence: open sessions need their idle timers again
        left_out = 0
        if rec.get("key_accounts"):  # capped in number and bytes: the event record and its ROI fact hold them
            held, p = self.key_accounts, self.p
            for account in rec["key_accounts"]:
                if account in held:
                    continue
                size = json_size(account) + 1
                if len(held) >= p.max_key_accounts or self.key_accounts_bytes + size > p.max_key_accounts_bytes:
                    left_out += 1
                    continue
                held.add(account)
                self.key_accounts_bytes += size
        if kind == "started":
            if self.started is None or ts < self.started:
                self.started = ts
                # The windows begin at min(first session start, started): also with nobody present yet.
                if not self.curve and (self.next_window is None or window_of(ts) < self.next_window):
                    self.next_window, self.before = window_of(ts), 0
        elif kind == "ended" and self.ended is None:
            watermark = self.clock - self.p.lateness_ms if self.clock is not None else ts
            self.ended = max(ts, watermark)
            self._touched.update(self.attendees)  # every open session closes at the end
        self._event_dirty = True
        return left_out

    def _presence_changed(self) -> bool:
        """Take the presence mode from the metadata; True when it changed. A change applies to presence records not
        yet folded into an attendee's checkpoint (within the allowed lateness of the clock): declare the mode on
        the event's first lifecycle record."""
        join_leave = self.meta.get("presence") == "join_leave"
        if join_leave == self.join_leave:
            return False
        self.join_leave = join_leave
        self.idle_ms = NO_IDLE if join_leave else self.p.idle_ms
        return True

    # ------------------------------------------------------------------ once per batch
    def advance(self) -> None:
        """Bring derived state up to the clock: refresh touched attendees, time out the silent, close windows."""
        clock = self.clock if self.clock is not None else (self.ended or 0)
        p = self.p
        if self._prune_due:  # windows handed out by an earlier take_writes: persisted by now
            for end, member_ids in self._prune_due:
                for aid in member_ids:
                    self.attendees[aid].prune(end)
            self._prune_due.clear()
        pending = not self._rearm
        self._rearm = False
        for aid in self._touched:
            self._refresh(aid, clock, pending)
        self._touched.clear()
        heap, timers = self._timer_heap, self._timers
        while heap and heap[0] <= clock:
            due = heapq.heappop(heap)
            aids = timers.pop(due, ())
            for aid in (aids,) if isinstance(aids, str) else aids:
                att = self.attendees[aid]
                if att.open_start is None:
                    continue
                if att.open_last + self.idle_ms <= clock:
                    self._refresh(aid, clock, False)
                elif not self.join_leave:  # signs of life since this timer was set: wait for their new deadline
                    self._arm(att.open_last + p.idle_ms, aid)
        if self.clock is not None and not self.windows_done:
            self._close_windows(self.clock - p.lateness_ms)

    def _refresh(self, aid: str, clock: int, timer_pending: bool) -> None:
        """Recompute an attendee's view and window memberships; keep one idle timer armed while they are present.

        Timers are lazy: while present, an attendee has one pending timer at or before their idle deadline
        (`timer_pending`: the one set at their previous deadline has not fired yet). Signs of life only move the
        deadline later, so they arm nothing; the timer re-arms itself when it fires early (advance)."""
        att = self.attendees[aid]
        idle = self.idle_ms
        armed = att.open_last + idle if timer_pending and att.open_start is not None else None
        att.refresh(clock, idle, self.ended, self.join_leave)
        members = self._members
        # Sessions the checkpoint closed since the last refresh are final but still feed unemitted windows.
        sessions = att.sessions()
        if sessions:
            self._note_start(sessions[0][0])
        if att.open_start is not None:
            self._note_start(att.open_start)
        first = self.next_window
        for s_start, _, depart, _ in sessions:
            _join_window(members, window_of(s_start), first, aid)
            _join_window(members, window_of(depart), first, aid)
        if att.open_start is not None:
            _join_window(members, window_of(att.open_start), first, aid)
            deadline = att.open_last + idle
            if (armed is None or armed > deadline) and not self.join_leave:  # (join_leave: no idle timeout)
                self._arm(deadline, aid)
        self._dirty.add(aid)

    def _arm(self, deadline: int, aid: str) -> None:
        timers = self._timers
        due = timers.get(deadline)
        if due is None:  # one attendee per deadline is the common case: no set for it (~200 B each)
            timers[deadline] = aid
            heapq.heappush(self._timer_heap, deadline)
        elif isinstance(due, set):
            due.add(aid)
        elif due != aid:
            timers[deadline] = {due, aid}

    def _note_start(self, t: int) -> None:
        if self.first_session is None or t < self.first_session:
            self.first_session = t
            w = window_of(min(t, self.started) if self.started is not None else t)
            if self.next_window is None or (w < self.next_window and not self.curve):
                if self.next_window is not None:
                    self.before = 0
                self.next_window = w

    def _close_windows(self, watermark: int, force: bool = False) -> None:
        """Emit windows the watermark has passed (all of them up to the end when `force`)."""
        if self.next_window is None:
            return
        last = window_of(self.ended) if self.ended is not None else None
        newest = last if force and last is not None else watermark
        floor = window_of(newest - self.p.max_span_ms)
        if self.next_window < floor:
            # A record far before the rest (a broken clock, a forged ts) would otherwise make the event emit and
            # keep one window per minute of the gap: windows beyond the span are skipped (docs/semantics.md "Caps").
            self.next_window, self.before = floor, 0
            for stale in [w for w in self._members if w < floor]:
                del self._members[stale]
            for stale in [w for w in self.window_counts if w < floor]:
                del self.window_counts[stale]
        while (force or watermark > self.next_window + WINDOW_MS) and not self.windows_done:
            start = self.next_window
            if last is not None and start > last:
                self.windows_done = True
                break
            self._emit_window(start)
            if last is not None and start >= last:
                self.windows_done = True
            if force and last is None:
                break

    def _emit_window(self, start: int) -> None:
        end = start + WINDOW_MS
        attendees = self.attendees
        member_ids = self._members.pop(start, set())
        members = [_sessions_with_open(attendees[a]) for a in member_ids]
        nxt = [_sessions_with_open(attendees[a]) for a in self._members.get(end, ())]
        figures, self.before = close_window(start, self.before, members, nxt)
        counts = self.window_counts.pop(start, None) or [0] * len(WINDOW_TYPES)
        record = {"event_id": self.event_id, **figures}
        for name, n in zip(WINDOW_TYPES[2:], counts[2:]):
            record[_plural(name)] = n
        # Completed sessions leave the histogram once their departure's window is final.
        for sessions in members:
            for s_start, dwell_end, depart, _ in sessions:
                if start <= depart < end and depart != _OPEN:
                    self._observe_session(dwell_end - s_start)
        # Not pruned yet: an attendee record persisted with this window must not lose sessions the event record
        # written with it (next_window) may not reach the changelog with (module docstring). Persisting may come
        # several batches later (a checkpoint interval): pruning waits for the take_writes that hands it out.
        self._prune_unsaved.append((end, member_ids))
        self.peak_closed = max(self.peak_closed, figures["peak_concurrent"])
        self.curve.append(record)
        self._unsaved_windows.append(record)
        self._closed.append(record)
        self.next_window = end
        self._event_dirty = True

    def _observe_session(self, ms: int) -> None:
        seconds = ms / 1000
        i = 0
        while i < len(SESSION_BUCKETS) and seconds > SESSION_BUCKETS[i]:
            i += 1
        self.session_hist[i] += 1
        self.session_sum_ms += ms

    # ------------------------------------------------------------------ reading
    def start_ts(self) -> int | None:
        return self.started if self.started is not None else self.first_join

    def effective_clock(self, wall_now: float) -> int:
        """Record clock advanced by wall time while the event is silent, so a quiet room still times out."""
        base = self.clock if self.clock is not None else (self.ended or self.started or 0)
        silence = max(0.0, wall_now - self.wall_last) if self.wall_last else 0.0
        return base + int(silence * 1000)

    def summary_due(self, wall_now: float) -> bool:
        return (
            self.ended is not None
            and not self.summary_done
            and self.effective_clock(wall_now) >= self.ended + self.p.lateness_ms
        )

    def status(self) -> str:
        if self.ended is not None:
            return "ended"
        return "live" if self.started is not None or self.first_session is not None else "scheduled"

    def snapshot(self, as_of: int) -> dict:
        """The live figures at event time `as_of` (one pass over the attendees)."""
        p, idle = self.p, self.idle_ms
        final = self.ended is not None and self.summary_done
        start = self.start_ts()
        if self.ended is not None:
            as_of = max(as_of, self.ended) if final else as_of
        end = self.ended if final and self.ended is not None else as_of
        elapsed = end - start if start is not None else None
        current = unique = registrations = attended_registrants = walk_ins = key_attendees = 0
        voters = clickers = 0
        dwell_ms = settled_ms = 0
        score_sum = 0.0
        grades = dict.fromkeys(GRADES, 0)
        covered: set[str] = set()
        polls_seen = len(self.polls_seen)
        key_accounts = self.key_accounts
        tally = ChannelTally()
        for aid in sorted(self.attendees):
            a = self.attendees[aid]
            counts = a.counts
            if a.registered:
                registrations += 1
            if counts[POLL_VOTE]:
                voters += 1
            if counts[CTA_CLICK]:
                clickers += 1
            if not a.ever_present:
                if a.registered or a.has_activity():
                    grades["D"] += 1  # a no-show lead scores 0
                    tally.add(a.registered, a.channel, False, 0, 0.0, "D")
                continue
            unique += 1
            if a.is_present(as_of, idle):
                current += 1
            if a.registered:
                attended_registrants += 1
            else:
                walk_ins += 1
            if a.is_key_account(key_accounts):
                key_attendees += 1
                covered.update(x for x in a.accounts if x in key_accounts)
            dwell = a.dwell(as_of, idle)
            dwell_ms += dwell
            settled_ms += a.settled_dwell()
            score = engagement_score(
                p.weights,
                dwell_ms=dwell,
                elapsed_ms=elapsed,
                chats=counts[CHAT],
                reactions=counts[REACTION],
                questions=counts[QUESTION],
                polls_voted=len(a.polls),
                polls_seen=polls_seen,
                cta_clicked=counts[CTA_CLICK] > 0,
            )
            score_sum += score
            g = grade(p.grades, score)
            grades[g] += 1
            tally.add(a.registered, a.channel, True, dwell, score, g)
        total_dwell = dwell_ms / 1000
        self.settled_dwell_ms = settled_ms
        self.open_count = current
        return {
            "event_id": self.event_id,
            "as_of": as_of,
            "status": self.status(),
            "title": self.meta.get("title"),
            "started_at": self.started,
            "ended_at": self.ended,
            "attendees_current": current,
            "attendees_peak": self.peak_closed if final else max(self.peak_closed, current),
            "unique_attendees": unique,
            "registrations": registrations,
            "attendance_rate": attended_registrants / registrations if registrations else None,
            "walk_ins": walk_ins,
            "total_dwell_seconds": total_dwell,
            "avg_dwell_seconds": total_dwell / unique if unique else 0.0,
            "interactions": dict(zip(TYPES, self.interaction_totals)),
            "poll_voters": voters,
            "cta_clickers": clickers,
            "engagement_score": score_sum / unique if unique else 0.0,
            "key_account_attendees": key_attendees,
            **self._marketing(registrations, unique, key_attendees, len(covered), grades),
            "channels": tally.figures(p.max_channels, self.meta.get("channel_costs")),
        }

    def _marketing(self, registrations: int, unique: int, key_attendees: int, covered: int, grades: dict) -> dict:
        """Cost and key-account figures that need nothing but this event (docs/semantics.md "Marketing figures of
        one event")."""
        meta = self.meta
        cost = meta.get("cost")
        targeted = len(self.key_accounts)
        return {
            "organizer_id": meta.get("organizer_id"),
            "cost": cost,
            "currency": meta.get("currency"),
            "cost_per_registration": cost / registrations if cost is not None and registrations else None,
            "cost_per_attendee": cost / unique if cost is not None and unique else None,
            "key_account_share": key_attendees / unique if unique else None,
            "key_accounts_targeted": targeted,
            "key_accounts_covered": covered,
            "key_account_coverage": covered / targeted if targeted else None,
            "leads_by_grade": grades,
            "mqls": sum(grades[g] for g in MQL_GRADES),
        }

    def take_closed_windows(self) -> list[dict]:
        closed, self._closed = self._closed, []
        return closed

    def finish(self, wall_now: float) -> tuple[dict, list[dict]]:
        """Close every remaining window and produce the summary and the leads (once)."""
        self.advance()
        self._close_windows(0, force=True)
        self.summary_done = True
        self.summary_wall = wall_now
        self._event_dirty = True
        summary = self.snapshot(self.ended if self.ended is not None else (self.clock or 0))
        summary["attendance_curve"] = [
            {k: w[k] for k in ("attendees_start", "attendees_end", "peak_concurrent", "joins", "leaves")}
            | {"minute": w["window_start"]}
            for w in self.curve
        ]
        summary["drop_off_minutes"] = [
            {
                "minute": w["window_start"],
                "leaves": w["leaves"],
                "attendees_start": w["attendees_start"],
                "drop_off_ratio": w["drop_off_ratio"],
            }
            for w in self.curve
            if w["drop_off_ratio"] >= self.p.drop_off_minute_ratio and w["attendees_start"] > 0
        ]
        return summary, self.leads()

    def roi_facts(self, summary: dict, leads: list[dict], chunk: int = 1000) -> list[dict]:
        """What the ROI ledger of this event's organiser needs: the event's figures, then its leads in chunks
        (one record per lead would double the output volume; one record for 50,000 leads would be too big: a
        chunk holds at most `chunk` leads and IDS_RECORD_BYTES)."""
        meta = self.meta
        base = {"organizer_id": meta.get("organizer_id") or "default", "event_id": self.event_id}
        start = self.start_ts()
        event = base | {
            "fact": "event", "title": meta.get("title"), "start": start if start is not None else self.ended,
            "end": self.ended, "cost": meta.get("cost"), "currency": meta.get("currency"),
            "key_accounts": sorted(self.key_accounts), "attribution_days": meta.get("attribution_days"),
            "attribution_days_key_accounts": meta.get("attribution_days_key_accounts"),
            **{k: summary[k] for k in ("registrations", "unique_attendees", "attendance_rate", "engagement_score",
                                       "mqls")},
        }
        facts: list[dict] = [event]
        rows: list[list] = []
        size = 0
        for x in leads:  # chunks of at most `chunk` leads and IDS_RECORD_BYTES (each lead bounded by json_size)
            accounts = self.attendees[x["attendee_id"]].accounts
            row_size = json_size(x["attendee_id"]) + sum(json_size(a) + 1 for a in accounts) + 40
            if rows and (len(rows) >= chunk or size + row_size > IDS_RECORD_BYTES):
                facts.append(base | {"fact": "leads", "leads": rows})
                rows, size = [], 0
            rows.append([x["attendee_id"], x["attended"], x["registered"], x["grade"], accounts, x["key_account"]])
            size += row_size
        if rows:
            facts.append(base | {"fact": "leads", "leads": rows})
        return facts

    def leads(self) -> list[dict]:
        p = self.p
        start = self.start_ts()
        end = self.ended if self.ended is not None else (self.clock or 0)
        elapsed = end - start if start is not None else None
        polls_seen = len(self.polls_seen)
        out = []
        for aid in sorted(self.attendees):
            a = self.attendees[aid]
            if not (a.registered or a.has_activity()):
                continue
            counts = a.counts
            attended = a.ever_present
            dwell = a.dwell(end, self.idle_ms) if attended else 0
            score = (
                engagement_score(
                    p.weights,
                    dwell_ms=dwell,
                    elapsed_ms=elapsed,
                    chats=counts[CHAT],
                    reactions=counts[REACTION],
                    questions=counts[QUESTION],
                    polls_voted=len(a.polls),
                    polls_seen=polls_seen,
                    cta_clicked=counts[CTA_CLICK] > 0,
                )
                if attended
                else 0.0
            )
            out.append(
                {
                    "event_id": self.event_id,
                    "attendee_id": aid,
                    "attended": attended,
                    "registered": a.registered,
                    "dwell_seconds": dwell / 1000,
                    "interactions": {t: counts[TYPE_INDEX[t]] for t in _LEAD_TYPES},
                    "polls_voted": len(a.polls),
                    "cta_clicked": counts[CTA_CLICK] > 0,
                    "engagement_score": score,
                    "grade": grade(p.grades, score),
                    "organizer_id": self.meta.get("organizer_id"),
                    "key_account": a.is_key_account(self.key_accounts),
                    "account_id": a.account_id,
                    "channel": a.channel,
                }
            )
        return out

    # ------------------------------------------------------------------ persistence
    def take_writes(self) -> list[tuple[int, object, object]]:
        """The state records changed since the last call, in the order to persist them (module docstring):
        (IDS, number, ids | None to delete), (ATTENDEE, attendee id, record), (WINDOW, window start, record),
        (EVENT, "", record)."""
        dirty, self._dirty = self._dirty, set()
        event_dirty, self._event_dirty = self._event_dirty, False
        # Forget by the clock of the previous event record, which is persisted by now: a replay of this batch
        # from that record needs every id this batch could still have matched.
        horizon = (self.persisted_clock or 0) - self.p.horizon_ms
        self.persisted_clock = self.clock
        writes: list[tuple[int, object, object]] = []
        new_ids = self._new_ids
        if new_ids:
            self._new_ids = []
            for part in split_ids(new_ids):
                number = self._next_id_record
                self._next_id_record += 1
                writes.append((IDS, number, part))
                heapq.heappush(self._id_records, (max(part[ID_RECORD_FIELDS - 1::ID_RECORD_FIELDS]), number))
        owners = self._id_owner
        attendees = self.attendees
        for aid in sorted(dirty):
            att = attendees[aid]
            for rid in att.forget_ids(horizon):
                if owners.get(rid) == aid:
                    del owners[rid]
            writes.append((ATTENDEE, aid, att.dump()))
        if self._unsaved_windows:
            writes.extend((WINDOW, w["window_start"], w) for w in self._unsaved_windows)
            self._unsaved_windows = []
        if self._prune_unsaved:  # persisted before the next advance (the caller's contract)
            self._prune_due.extend(self._prune_unsaved)
            self._prune_unsaved = []
        records = self._id_records
        while records and records[0][0] < horizon:  # every id in it is forgotten (lookups ignore them already)
            writes.append((IDS, heapq.heappop(records)[1], None))
        if writes or event_dirty:
            writes.append((EVENT, "", self.dump_event()))
        return writes

    def persisted_names(self) -> list[tuple[int, object]]:
        """(kind, name) of every state record of this event (to delete them all when it expires)."""
        return ([(ATTENDEE, aid) for aid in self.attendees] + [(WINDOW, w["window_start"]) for w in self.curve]
                + [(IDS, number) for _, number in self._id_records] + [(EVENT, "")])

    def dump_event(self) -> dict:
        return {
            "clock": self.clock, "started": self.started, "ended": self.ended, "first_join": self.first_join,
            "first_session": self.first_session, "meta": self.meta, "key_accounts": sorted(self.key_accounts),
            "polls_seen": sorted(self.polls_seen), "late": self.late, "duplicates": self.duplicates,
            "next_window": self.next_window, "windows_done": self.windows_done, "before": self.before,
            "window_counts": {str(k): v for k, v in self.window_counts.items()},
            "window_applied": {str(k): v for k, v in self.window_applied.items()},
            "applied": {str(k): v for k, v in self.applied.items()},
            "peak_closed": self.peak_closed, "session_hist": self.session_hist,
            "session_sum_ms": self.session_sum_ms, "summary_done": self.summary_done, "summary_wall": self.summary_wall,
        }

    @classmethod
    def load(cls, event_id: str, params: Params, records: dict[tuple[int, Any], Any]) -> EventState:
        """Rebuild from persisted records, {(kind, name): record} as take_writes() wrote them."""
        attendees: dict[str, Attendee] = {}
        windows: dict[int, dict] = {}
        ids: dict[int, list] = {}
        for (kind, name), record in records.items():
            if kind == ATTENDEE:
                attendees[name] = Attendee.load(record)
            elif kind == WINDOW:
                windows[name] = record
            elif kind == IDS:
                ids[name] = record
        return cls.from_parts(event_id, params, records.get((EVENT, "")), attendees, windows, ids)

    @classmethod
    def from_parts(cls, event_id: str, params: Params, event: dict | None, attendees: dict[str, Attendee],
                   windows: dict[int, dict] | None = None, id_records: dict[int, list] | None = None) -> EventState:
        """Rebuild from the persisted event record, the attendees loaded from theirs (the dict is kept), the
        window records and the ids records; derived indexes (window members, timers) are recomputed."""
        st = cls(event_id, params)
        if event:
            for key in ("clock", "started", "ended", "first_join", "first_session", "meta", "late", "duplicates",
                        "next_window", "windows_done", "before", "peak_closed", "session_hist",
                        "session_sum_ms", "summary_done", "summary_wall"):
                setattr(st, key, event[key])
            st.key_accounts = set(event["key_accounts"])
            st.key_accounts_bytes = sum(json_size(a) + 1 for a in st.key_accounts)
            st.polls_seen = set(event["polls_seen"])
            st.window_counts = {int(k): v for k, v in event["window_counts"].items()}
            st.window_applied = {int(k): v for k, v in event["window_applied"].items()}
            st.applied = {int(k): v for k, v in event.get("applied", {}).items()}
            st.persisted_clock = st.clock
            st._presence_changed()
        st.attendees = attendees
        st._restore_windows((event or {}).get("curve", ()), windows or {})
        st._restore_ids(id_records or {})
        totals = st.interaction_totals
        for a in attendees.values():
            for i, n in enumerate(a.counts):
                totals[i] += n
        if st.next_window is not None:
            for a in attendees.values():
                if a.final_sessions:
                    a.prune(st.next_window)  # sessions of windows already emitted
        st._touched = set(attendees)
        st._rebuild_members()
        st.advance()
        st._dirty.clear()
        st._event_dirty = False
        return st

    def _restore_windows(self, legacy_curve, windows: dict[int, dict]) -> None:
        """The attendance curve: the window records before next_window (later ones were written by a batch whose
        event record did not persist: the replay emits them again). Event records written before windows had
        records of their own hold the curve: it is written out as window records with the next batch."""
        nxt = self.next_window
        curve = {w["window_start"]: w for w in legacy_curve}
        unsaved = set(curve) - set(windows)
        curve.update(windows)
        starts = sorted(w for w in curve if nxt is not None and w < nxt)
        self.curve = [curve[w] for w in starts]
        self._unsaved_windows = [curve[w] for w in starts if w in unsaved]

    def _restore_ids(self, id_records: dict[int, list]) -> None:
        """The id memory, from the ids records in the order they were written (a later entry of an id replaces an
        earlier one, as drop + remember did). Ids of attendees without a record are left out: that batch did not
        persist them and its replay remembers them again. Ids that attendee records of layout 2 and older hold
        and no ids record does go into the next ids record."""
        attendees = self.attendees
        owners = self._id_owner = {rid: aid for aid, a in attendees.items() if a.ids for rid in a.ids[::ID_FIELDS]}
        legacy = dict(owners)
        heap = self._id_records
        n = ID_RECORD_FIELDS
        for number in sorted(id_records):
            record = id_records[number]
            for rid, aid, topic, offset, ts in zip(*(record[i::n] for i in range(n))):
                att = attendees.get(aid)
                if att is None:
                    continue
                previous = owners.get(rid)
                if previous is not None:
                    attendees[previous].drop_id(rid)
                    legacy.pop(rid, None)
                att.remember_id(rid, topic, offset, ts)
                owners[rid] = aid
            if record:
                heap.append((max(record[n - 1::n]), number))
        heapq.heapify(heap)
        self._next_id_record = max(id_records, default=-1) + 1
        for rid, aid in legacy.items():
            seen = attendees[aid].find_id(rid)
            if seen is not None:  # (always: legacy lists ids its attendees hold)
                self._new_ids += (rid, aid, *seen)

    def _rebuild_members(self) -> None:
        first, members = self.next_window, self._members
        for aid, a in self.attendees.items():
            for s_start, _, depart, _ in a.final_sessions:
                _join_window(members, window_of(s_start), first, aid)
                _join_window(members, window_of(depart), first, aid)


_OPEN = 1 << 62
# Metadata kept from lifecycle records (the last value given wins).
META_FIELDS = ("title", "scheduled_start", "scheduled_end", "cost", "currency", "organizer_id", "attribution_days",
               "attribution_days_key_accounts", "presence", "channel_costs")
_LEAD_TYPES = ("join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click")


def json_size(text: str) -> int:
    """An upper bound of the bytes of `text` as a JSON string: UTF-8, quotes, and 6 bytes per escaped character."""
    size = len(text.encode()) + 2
    if not text.isprintable() or '"' in text or "\\" in text:
        size += 5 * sum(1 for c in text if c < " " or c in '"\\' or not c.isprintable())
    return size


def split_ids(flat: list) -> list[list]:
    """A flat ids list (ID_RECORD_FIELDS per entry) in parts of at most IDS_RECORD_BYTES as JSON each.

    Bounds per entry: each id and attendee id by json_size, the three integers (topic, offset, ts) by 20 digits
    each, and the commas: counted once per entry, cheaply, because 10,000 entries can come in one batch."""
    n = ID_RECORD_FIELDS
    parts, start, size = [], 0, 2
    for i in range(0, len(flat), n):
        rid, aid = flat[i], flat[i + 1]
        if (rid.isascii() and aid.isascii() and rid.isprintable() and aid.isprintable() and '"' not in rid
                and '"' not in aid and "\\" not in rid and "\\" not in aid):
            entry = len(rid) + len(aid) + 4 + 3 * 20 + 5
        else:
            entry = json_size(rid) + json_size(aid) + 3 * 20 + 5
        if size + entry > IDS_RECORD_BYTES and i > start:
            parts.append(flat[start:i])
            start, size = i, 2
        size += entry
    parts.append(flat[start:])
    return parts


def _join_window(members: dict[int, set[str]], w: int, first: int | None, aid: str) -> None:
    """Make `aid` a member of window `w` unless that window is already emitted (before `first`)."""
    if first is None or w >= first:
        group = members.get(w)
        if group is None:  # (not setdefault: that builds an empty set on every call)
            group = members[w] = set()
        group.add(aid)


def _sessions_with_open(p: Presence) -> Sequence[Session]:
    sessions = p.sessions()
    if p.open_start is not None:
        return [*sessions, (p.open_start, p.open_last, _OPEN, -1)]
    return sessions


def _plural(name: str) -> str:
    return name + "s" if not name.endswith("s") else name
