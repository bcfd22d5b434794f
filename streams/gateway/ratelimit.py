"""Token buckets per client address and per attendee, in maps of bounded size.

A flood of new addresses or attendee ids cannot grow the maps: beyond `max_keys` the least recently seen bucket
is forgotten (it comes back full, which only ever lets a forgotten sender through, never blocks a new one).
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, list[float]] = OrderedDict()  # key -> [tokens, updated_at]

    def allow(self, key: object, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from the key's bucket; False (and nothing taken) when there are not enough."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < cost:
            return False
        bucket[0] -= cost
        return True

    def __len__(self) -> int:
        return len(self._buckets)
