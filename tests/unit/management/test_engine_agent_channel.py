"""Jobs resumed at start wait for the agent channel that the daemon starts just after."""

import threading

import pytest

from stackwright.management.engine import Engine
from stackwright.management.options import Options


@pytest.fixture
def engine(tmp_path):
    return Engine(Options(db_url="sqlite:///%s" % (tmp_path / "cloud.db")))


def test_a_channel_still_starting_is_waited_for(engine):
    engine.agents_coming = True
    channel = object()
    threading.Timer(0.2, engine.attach_agents, (channel,)).start()
    assert engine.agent_channel(wait=30) is channel


def test_without_a_channel_coming_there_is_no_wait(engine, monkeypatch):
    def must_not_wait(timeout=None):
        raise AssertionError("waited for an agent channel that is not coming")

    monkeypatch.setattr(engine._agents_up, "wait", must_not_wait)
    assert engine.agent_channel(wait=30) is None


def test_a_channel_that_stops_wakes_its_waiters(engine):
    engine.agents_coming = True
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(engine.agent_channel(wait=600)))
    waiter.start()
    engine.detach_agents()
    waiter.join(60)
    assert not waiter.is_alive() and seen == [None]
