"""Agents that know several engines: the order they try them in, failover, and the way back."""

import asyncio
import random

import pytest

from agentlink_helpers import Recorder, eventually, start_server

from stackwright.agent.link import Backoff, Registration, ordered_endpoints, parse_endpoints, tcp_connector
from stackwright.simulation.agent import SimulatedAgent


def test_addresses_are_host_or_host_and_port():
    assert parse_endpoints("10.0.0.1, 10.0.0.2:9250,[fd00::1]:8251,fd00::2", 8250) == [
        ("10.0.0.1", 8250), ("10.0.0.2", 9250), ("fd00::1", 8251), ("fd00::2", 8250)]
    for bad in ("", " , ", "a:0", "a:70000"):
        with pytest.raises(ValueError):
            parse_endpoints(bad, 8250)


def test_the_algorithms_order_the_engines():
    engines = [("a", 1), ("b", 1), ("c", 1)]
    assert ordered_endpoints(engines, "static", "guid-1") == engines
    # roundrobin: each agent starts at an engine of its own (by its guid), the others follow in turn.
    firsts = {ordered_endpoints(engines, "roundrobin", "guid-%d" % i)[0] for i in range(30)}
    assert firsts == set(engines)
    rotated = ordered_endpoints(engines, "roundrobin", "guid-7")
    start = engines.index(rotated[0])
    assert rotated == engines[start:] + engines[:start]
    assert ordered_endpoints(engines, "roundrobin", "guid-7") == rotated
    shuffled = ordered_endpoints(engines, "shuffle", rng=random.Random(3))
    assert sorted(shuffled) == engines
    with pytest.raises(ValueError, match="unknown load-balancing algorithm"):
        ordered_endpoints(engines, "weighted")


def test_an_agent_fails_over_to_the_next_engine_and_returns_to_its_preferred_one(pki):
    async def scenario():
        first_events, second_events = Recorder(), Recorder()
        first = await start_server(pki, first_events)
        second = await start_server(pki, second_events)
        port = first.port
        connector = tcp_connector(["127.0.0.1:%d" % port, "127.0.0.1:%d" % second.port], 8250,
                                  pki.client_context("guid-f"))
        agent = SimulatedAgent(Registration(guid="guid-f"), connector, backoff=Backoff(0.05, 0.2),
                               check_interval=0.3)
        again = None
        try:
            await agent.start(wait_registered=10)
            assert first.session("host-guid-f") is not None and connector.current == ("127.0.0.1", port)
            await first.stop()
            await eventually(lambda: second.session("host-guid-f") is not None)
            assert connector.current == ("127.0.0.1", second.port)
            # The preferred engine comes back: the agent returns to it by itself.
            again = await start_server(pki, Recorder(), port=port)
            await eventually(lambda: again.session("host-guid-f") is not None, timeout=10)
            await eventually(lambda: second.session("host-guid-f") is None)
            assert connector.current == ("127.0.0.1", port)
        finally:
            await agent.stop()
            for server in (second, again):
                if server is not None:
                    await server.stop()

    asyncio.run(scenario())
