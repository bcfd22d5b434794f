"""Notice that this whole worker process stood still (SIGSTOP, a VM pause, heavy swapping) for too long.

Without Kafka transactions nothing fences a worker that froze beyond the session timeout: the group gave its
partitions to another worker meanwhile, and whatever it writes when it wakes lands in the changelog behind the
new owner's state. So before it writes anything, the worker asks whether it was frozen; if so it exits instead
(EX_TEMPFAIL) and its supervisor starts it again, which rejoins the group and rebuilds from the changelog.

The event loop alone cannot tell a freeze from a long blocking step (restoring a large partition blocks it for
seconds while the consumer thread keeps the membership alive), so a thread of its own beats every half second:
only a frozen process stops that thread too.
"""

from __future__ import annotations

import threading
import time


class FreezeWatch:
    def __init__(self, limit_s: float, beat_s: float = 0.5) -> None:
        self.limit_s = limit_s
        self.beat_s = beat_s
        self.last_beat = time.monotonic()
        self.longest = 0.0  # longest gap between beats seen above the limit

    def start(self) -> FreezeWatch:
        threading.Thread(target=self._beat, name="livepulse-freeze-watch", daemon=True).start()
        return self

    def _beat(self) -> None:
        while True:
            time.sleep(self.beat_s)
            now = time.monotonic()
            if now - self.last_beat > self.limit_s:
                self.longest = max(self.longest, now - self.last_beat)
            self.last_beat = now

    def frozen_for(self) -> float:
        """Seconds of a freeze beyond the limit since the start (0.0 if none), also one the beating thread has
        not had the chance to notice yet (the caller woke up first)."""
        pending = time.monotonic() - self.last_beat
        return max(self.longest, pending if pending > self.limit_s else 0.0)
