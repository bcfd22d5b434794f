"""The worker's freeze watch (streams/state/freeze_watch.py): a busy process is not frozen, a stopped one is.

The real freeze (SIGSTOP of a worker beyond the session timeout, then exit 75 without writing) is tested in
tests/integration/test_scale_out.py; these check the two sides of the rule on a real thread in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from streams.state.freeze_watch import FreezeWatch


def test_a_busy_interpreter_is_not_a_freeze():
    """Python work holding the main thread (a long restore, a big summary) lets the watch thread beat."""
    watch = FreezeWatch(limit_s=1.0, beat_s=0.05).start()
    end = time.monotonic() + 2.0
    n = 0
    while time.monotonic() < end:
        n += sum(range(1000))
    assert n > 0
    assert watch.frozen_for() == 0.0


def test_a_stopped_process_notices_the_freeze_after_waking(tmp_path):
    """SIGSTOP a process running the watch for longer than the limit, wake it: it reports the freeze, whether its
    main thread or the watch thread runs first."""
    script = textwrap.dedent("""
        import sys, time
        from streams.state.freeze_watch import FreezeWatch
        watch = FreezeWatch(limit_s=0.5, beat_s=0.05).start()
        print("ready", flush=True)
        sys.stdin.readline()  # the test stops and wakes us meanwhile
        print(f"{watch.frozen_for():.2f}", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=os.getcwd())
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        child.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        child.send_signal(signal.SIGCONT)
        out, _ = child.communicate("go\n", timeout=10)
    finally:
        child.kill()
    assert float(out.strip()) >= 1.0
