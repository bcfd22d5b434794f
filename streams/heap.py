"""Give memory the process has freed back to the operating system (glibc's malloc_trim).

The worker frees large transient buffers after every batch and checkpoint (decoded records, state records, record
batches) while millions of long-lived attendee objects keep growing around them. glibc keeps freed memory inside
its heap unless it lies at the very top, so RSS climbed far above what was live: with 1,000,000 present attendees
in-process, 911 MiB of RSS held 5.26 million live blocks either way, and malloc_trim(0) brought it to 825 MiB
(persisting every batch) or from 1,186 MiB to 830 MiB (persisting every sixth). It takes 7-25 ms with that heap.
The worker calls it after a restore, on the first quiet tick after a burst, and under steady load once a minute: at
every tick, the pages it handed back were faulted straight in again by the next polls (the bench's throughput phase:
125,000-154,000 minor page faults against 52,000-63,000 without, 10-25% more records/s). Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class TrimWhenQuiet:
    """Calls `trim` on the first tick without work after some work (see above), and under steady load at most every
    `every_s`: RSS then still sheds what a long live event freed, at a re-faulting cost spread over a minute."""

    def __init__(self, trim: Callable[[], bool] = release_free_memory, *, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._trim, self._every_s, self._clock = trim, every_s, clock
        self._busy_this_tick = self._busy_since_trim = False
        self._last_trim = clock()

    def busy(self) -> None:
        self._busy_this_tick = self._busy_since_trim = True

    def tick(self) -> bool:
        """True when this tick trimmed."""
        now = self._clock()
        if self._busy_this_tick:
            self._busy_this_tick = False
            if now - self._last_trim < self._every_s:
                return False
        elif not self._busy_since_trim:
            return False
        self._busy_since_trim = False
        self._last_trim = now
        return self._trim()
