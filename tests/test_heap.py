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
    assert len(kept) == 7_500


def test_trims_once_on_the_first_quiet_tick_after_work_and_never_under_load():
    trims = []
    policy = TrimWhenQuiet(lambda: trims.append(1) or True)
    assert not policy.tick()  # nothing processed yet: nothing to give back
    for _ in range(5):  # under load every tick saw a batch: the next polls would fault trimmed pages in again
        policy.busy()
        assert not policy.tick()
    assert trims == []
    assert policy.tick()  # the first quiet tick after the burst
    assert not policy.tick() and not policy.tick()  # once per burst, not at every idle tick
    policy.busy()
    policy.busy()
    assert not policy.tick()
    assert policy.tick()
    assert trims == [1, 1]
