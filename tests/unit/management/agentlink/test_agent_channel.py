"""The engine's agent channel on a real database: the engine's own simulated agents and
agents that join by themselves register, answer calls through the gateway, wait for
addHost when no host is theirs, and leave their hosts Disconnected at shutdown."""

import asyncio
import logging

import pytest
from sqlalchemy import select

from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.link import Registration
from stackwright.simulation.agent import SimulatedAgent
from stackwright.management.agentlink.channel import AgentChannel
from stackwright.management.engine import Engine
from stackwright.management.options import Options
from stackwright.management.persistence.models import Host
from stackwright.management.services.gateway import HostRef
from stackwright.protocol import messages as m
from tests.support.rows import MiB, simulator_cluster_with_host


@pytest.fixture
def engine(tmp_path):
    engine = Engine(Options(db_url="sqlite:///%s" % (tmp_path / "cloud.db"), agent_host="127.0.0.1", agent_port=0,
                            pki_dir=str(tmp_path / "pki")))
    engine.db.upgrade()
    engine.settings.load()
    yield engine
    engine.db.dispose()


@pytest.fixture
def cluster_uuid(engine):
    """A Simulator cluster with one host, whose simulated agent the engine runs."""
    return simulator_cluster_with_host(engine.db)


def hosts(engine):
    with engine.db.transaction(readonly=True) as s:
        rows = s.execute(select(Host.guid, Host.state, Host.details).where(Host.removed.is_(None))).all()
    return {guid: (state, details) for guid, state, details in rows}


def test_agents_register_answer_calls_and_are_left_disconnected(engine, cluster_uuid, caplog):
    gateway = engine.gateway

    async def scenario():
        channel = await AgentChannel(engine, engine.options).start()
        gateway.attach(channel)
        joining = SimulatedAgent.local(channel.server.connect_local, Registration(guid="ext-1", cluster=cluster_uuid))
        waiting = SimulatedAgent.local(channel.server.connect_local, Registration(guid="new-1"),
                                       driver=SimulatorDriver(hostname="new-1", private_ip="192.0.2.7"))
        try:
            # The engine's own agent for host sim-0, started with the channel.
            assert await asyncio.to_thread(gateway.connected, "sim-0", 30)
            stats = await asyncio.to_thread(gateway.call, HostRef("sim-0", "h0"), m.GetHostStats(), 10)
            assert stats.stats.memory_total_bytes == 3072 * MiB

            # A simulated agent naming its cluster joins it as a new host.
            await joining.start(wait_registered=10)
            assert await asyncio.to_thread(gateway.connected, "ext-1", 10)
            state, details = hosts(engine)["ext-1"]
            assert state == "Up" and details["agent"] == "external"

            # An agent that no host is for waits for addHost, unregistered.
            await waiting.start(wait_registered=10)
            info, guid, _version = gateway.adopt_pending("192.0.2.7")
            assert guid == "new-1" and info.hostname == "new-1"
            assert not gateway.connected("new-1") and "new-1" not in hosts(engine)
            assert hosts(engine)["sim-0"][0] == "Up"
        finally:
            await joining.stop()
            await waiting.stop()
            gateway.detach()
            await channel.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert {guid: state for guid, (state, _since) in hosts(engine).items()} == {"sim-0": "Disconnected",
                                                                                "ext-1": "Disconnected"}
    assert "host(s) left Disconnected at shutdown" in caplog.text
