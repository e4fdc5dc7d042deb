import random

from stackwright.agent.link import Backoff


def test_backoff_grows_with_jitter_up_to_the_cap():
    backoff = Backoff(initial=2.0, maximum=30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _attempt in range(10)]
    assert 1.0 <= delays[0] <= 2.0
    assert 2.0 <= delays[1] <= 4.0
    assert all(15.0 <= d <= 30.0 for d in delays[5:])
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 2.0


def test_the_first_delay_never_exceeds_the_initial_step():
    for seed in range(50):
        assert Backoff(initial=5.0, maximum=60.0, rng=random.Random(seed)).next_delay() <= 5.0
