"""Bounded polling for tests that wait on real processes."""

import time


def wait_for(what, probe, timeout, interval=0.2):
    """Poll `probe()` until it returns something true; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("%s: not reached within %ss (last seen: %r)" % (what, timeout, value))
