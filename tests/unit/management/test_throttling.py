"""API throttling counted per account by every management server of one database."""

import time

import pytest

from stackwright.management.context import Principal
from stackwright.management.engine import Throttle
from stackwright.management.errors import Throttled
from stackwright.management.persistence.db import Database
from stackwright.management.services import throttling


@pytest.fixture
def db(tmp_path):
    database = Database("sqlite:///%s" % (tmp_path / "cloud.db"))
    database.upgrade()
    yield database
    database.dispose()


def test_two_servers_share_one_limit_per_account(db):
    first, second = (Throttle(db, True, interval=30, maximum=5) for _unused in range(2))
    user, other, admin = Principal(1, 10, False, 4), Principal(2, 20, False, 4), Principal(3, 30, True, 1)
    for server in (first, second, first, second, first):
        server.check(user)
    with pytest.raises(Throttled, match=r"account api limit, please retry after \[\d+\] ms"):
        second.check(user)
    other_calls = [first.check(other) for _unused in range(5)]
    assert other_calls == [None] * 5
    for _unused in range(10):
        second.check(admin)         # root admins are not counted
    issued, allowed, expires = first.status(10)
    assert (issued, allowed) == (6, 0) and 0 < expires <= 30000
    assert second.status(30)[:2] == (0, 5)
    second.reset(10)                # resetApiLimit on one server resets it for all
    assert first.status(10)[:2] == (0, 5)
    first.check(user)
    first.reset()
    assert first.status(20)[:2] == (0, 5)


def test_a_window_ends_after_the_interval(db):
    now = time.time()
    assert throttling.count_call(db, 7, interval=1, now=now) == (1, now)
    assert throttling.count_call(db, 7, interval=1, now=now + 0.5) == (2, now)
    assert throttling.count_call(db, 7, interval=1, now=now + 1.0) == (1, now + 1.0)
    assert throttling.window(db, 7) == (1, now + 1.0)
    assert throttling.window(db, 8) is None


def test_a_writing_request_counts_and_resets_in_its_own_transaction(db):
    """On SQLite a second writer opened by the same request would wait for the first one."""
    throttle = Throttle(db, True, interval=30, maximum=2)
    user = Principal(1, 10, False, 4)
    with db.transaction() as session:
        throttle.check(user, session)
        throttle.check(user, session)
        with pytest.raises(Throttled):
            throttle.check(user, session)
        assert throttle.status(10, session)[:2] == (3, 0)
        throttle.reset(10, session)
    assert throttle.status(10)[:2] == (0, 2)
