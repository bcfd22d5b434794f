"""streams/heap.py: freed memory inside glibc's heap goes back to the OS."""

import platform

import pytest

from streams.heap import TrimWhenQuiet, release_free_memory


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_heap_memory_is_returned():
    # 2 KiB buffers come from glibc's heap (not pymalloc, not mmap); keeping one in eight alive pins the heap top,
    # so freeing the rest leaves ~100 MiB free inside the heap, which glibc keeps without malloc_trim.
    buffers = [bytearray(2048) for _ in range(60_000)]
    kept = buffers[::8]
    del buffers
    before = rss_kib()
    assert release_free_memory()
    after = rss_kib()
    assert before - after > 50 * 1024, f"RSS {before} KiB -> {after} KiB"
    del kept  # alive until here: it pinned the heap top while the rest was freed


def test_trims_on_the_first_quiet_tick_after_work_and_once_a_minute_under_load():
    trims, now = [], [0.0]
    policy = TrimWhenQuiet(lambda: trims.append(now[0]) or True, every_s=60.0, clock=lambda: now[0])

    def tick(busy: bool) -> bool:
        now[0] += 0.25
        if busy:
            policy.busy()
        return policy.tick()

    assert not tick(busy=False)  # nothing processed yet: nothing to give back
    # Under load every tick saw a batch: trimming then would have the next polls fault the pages in again, so only
    # once a minute.
    assert [tick(busy=True) for _ in range(4 * 150)].count(True) == 2
    assert trims == [60.0, 120.0]
    assert tick(busy=False)  # the first quiet tick after the burst
    assert not tick(busy=False) and not tick(busy=False)  # once, not at every idle tick
    assert not tick(busy=True)
    assert tick(busy=False)
    assert trims == [60.0, 120.0, 150.5, 151.5]
