"""call_seconds times every call, and stops after a call slower than its give-up bound."""

import time

from einfhe.tools.timing import call_seconds


def test_every_call_is_timed_until_one_is_too_slow():
    calls = []
    seconds = call_seconds(lambda: calls.append(1), 4)
    assert len(seconds) == len(calls) == 4 and all(s >= 0 for s in seconds)
    calls.clear()
    seconds = call_seconds(lambda: (calls.append(1), time.sleep(0.02)), 4, give_up_after=0.01)
    assert len(seconds) == len(calls) == 1 and seconds[0] >= 0.02
