"""Jobs resumed at start wait for the agent channel that the daemon starts just after."""

import threading

import pytest

from stackwright.management.engine import Engine
from stackwright.management.options import Options
from stackwright.management.services.gateway import AgentAbsent, HostRef
from stackwright.protocol import messages as m


@pytest.fixture
def engine(tmp_path):
    return Engine(Options(db_url="sqlite:///%s" % (tmp_path / "cloud.db")))


def test_a_channel_still_starting_is_waited_for(engine):
    engine.gateway.expect()
    channel = object()
    threading.Timer(0.2, engine.gateway.attach, (channel,)).start()
    assert engine.gateway.channel_within(wait=30) is channel
    assert engine.gateway.channel is channel


def test_without_a_channel_coming_there_is_no_wait(engine, monkeypatch):
    def must_not_wait(timeout=None):
        raise AssertionError("waited for an agent channel that is not coming")

    monkeypatch.setattr(engine.gateway._up, "wait", must_not_wait)
    assert engine.gateway.channel_within(wait=30) is None
    with pytest.raises(AgentAbsent, match="not running"):
        engine.gateway.call(HostRef("guid-1", "h1"), m.CheckHealth(), 10, connect_wait=30)
    assert engine.gateway.down_within == 0.0
    assert not engine.gateway.connected("guid-1", wait=30)


def test_a_channel_that_stops_wakes_its_waiters(engine):
    engine.gateway.expect()
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(engine.gateway.channel_within(wait=600)))
    waiter.start()
    engine.gateway.detach()
    waiter.join(60)
    assert not waiter.is_alive() and seen == [None]
