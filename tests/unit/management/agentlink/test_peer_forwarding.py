"""Two management servers on one database: a call for a host whose agent one holds, made on
the other, is forwarded over the engine-to-engine channel (mutual TLS, certificates of the CA
both share through the database); an agent's certificate cannot forward."""

import asyncio

import pytest
from sqlalchemy import select

from stackwright.management.agentlink.channel import AgentChannel
from stackwright.management.agentlink.peers import PeerAbsent, PeerClient
from stackwright.management.daemon import bind_peer_socket
from stackwright.management.engine import Engine
from stackwright.management.errors import ResourceUnavailable
from stackwright.management.options import Options
from stackwright.management.persistence import crypto
from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Host, ManagementCa
from stackwright.management.services.gateway import AgentAbsent, HostRef
from stackwright.protocol import messages as m
from tests.support.rows import MiB, simulator_cluster_with_host


def server(tmp_path, name, api_port):
    opts = Options(db_url="sqlite:///%s" % (tmp_path / "cloud.db"), agent_host="127.0.0.1", agent_port=0,
                   listen_port=api_port, pki_dir=str(tmp_path / name / "pki"))
    sock = bind_peer_socket(opts)
    engine = Engine(opts)
    engine.cluster.sole = False     # two servers on this database, as on MariaDB
    engine.settings.load()
    engine.cluster.register()
    return engine, sock


@pytest.fixture
def pair(tmp_path):
    crypto.ensure_key(str(tmp_path / "key"))
    Database("sqlite:///%s" % (tmp_path / "cloud.db")).upgrade()
    a, sock_a = server(tmp_path, "a", 8080)
    b, sock_b = server(tmp_path, "b", 8081)
    simulator_cluster_with_host(a.db, mgmt_server_id=a.cluster.me.msid)
    yield (a, sock_a), (b, sock_b)
    a.db.dispose()
    b.db.dispose()


async def attached(*servers):
    """The agent channels of `servers` ((engine, socket) pairs), started and attached to their gateways."""
    channels = []
    for engine, sock in servers:
        channel = await AgentChannel(engine, engine.options, sock).start()
        engine.gateway.attach(channel)
        channels.append(channel)
    return channels


def test_a_call_made_on_one_server_reaches_the_agent_another_holds(pair, tmp_path):
    (a, sock_a), (b, sock_b) = pair

    async def scenario():
        channel_a, channel_b = await attached((a, sock_a), (b, sock_b))
        try:
            assert await asyncio.to_thread(a.gateway.connected, "sim-0", 30)
            assert "sim-0" in channel_a.simulated and "sim-0" not in channel_b.simulated
            # Both servers trust one CA, the one in the database.
            assert channel_a.ca.fingerprint == channel_b.ca.fingerprint
            with b.db.transaction(readonly=True) as s:
                assert s.execute(select(ManagementCa.cert_pem)).scalar_one() == channel_a.ca.ca_pem

            stats = await asyncio.to_thread(b.gateway.call, HostRef("sim-0", "h0"), m.GetHostStats(), 10)
            assert stats.stats.memory_total_bytes == 3072 * MiB
            assert await asyncio.to_thread(b.gateway.connected, "sim-0")
            with pytest.raises(ResourceUnavailable, match="Host sim-0 failed RebootVm: .*i-9-VM"):
                await asyncio.to_thread(b.gateway.call, HostRef("sim-0", "h0"), m.RebootVm(name="i-9-VM"), 10)

            # An agent's certificate (client authentication only) is refused by the channel.
            key_pem, cert_pem = channel_a.ca.issue_client_cert("guid-x")
            (tmp_path / "x.key").write_bytes(key_pem)
            (tmp_path / "x.crt").write_bytes(cert_pem)
            agent_client = PeerClient(channel_a.ca, tmp_path / "x.crt", tmp_path / "x.key")
            address = (a.cluster.me.service_ip, a.cluster.me.service_port)
            with pytest.raises(ResourceUnavailable, match=r"refused the call \(403\)"):
                await asyncio.to_thread(agent_client.call, address, "sim-0", "h0", m.GetHostStats(), 5)

            # B stops the simulated agent A runs (deleteHost through B).
            await asyncio.to_thread(b.gateway.stop_simulated, "sim-0")
            assert "sim-0" not in channel_a.simulated
            with a.db.transaction() as s:
                s.execute(select(Host)).scalar_one().state = "Disconnected"
            with pytest.raises(AgentAbsent, match="the agent of host h0 is not connected"):
                await asyncio.to_thread(b.gateway.call, HostRef("sim-0", "h0"), m.GetHostStats(), 5,
                                        connect_wait=1)
        finally:
            for engine, channel in ((b, channel_b), (a, channel_a)):
                engine.gateway.detach()
                await channel.close()

    asyncio.run(scenario())


def test_a_call_through_a_server_that_is_gone_is_never_sent_and_waits_for_the_agent(pair):
    """A's listener is closed (the server died) while the database still says it holds the agent:
    B's call was not sent anywhere, so it is not a lost answer but an absent agent, waited for."""
    (a, sock_a), (b, sock_b) = pair

    async def scenario():
        channel_a, channel_b = await attached((a, sock_a), (b, sock_b))
        try:
            assert await asyncio.to_thread(a.gateway.connected, "sim-0", 30)
            a.gateway.detach()
            await channel_a.close()
            address = (a.cluster.me.service_ip, a.cluster.me.service_port)
            assert b.cluster.host_owner("sim-0") == a.cluster.me.msid and b.cluster.peer_address(
                a.cluster.me.msid) == address
            with pytest.raises(PeerAbsent, match="the management server at .* cannot be reached"):
                await asyncio.to_thread(channel_b.peer_client.call, address, "sim-0", "h0", m.GetHostStats(), 5)
            with pytest.raises(AgentAbsent, match="^the agent of host h0 is not connected$"):
                await asyncio.to_thread(b.gateway.call, HostRef("sim-0", "h0"), m.GetHostStats(), 5,
                                        connect_wait=1)
        finally:
            b.gateway.detach()
            await channel_b.close()

    asyncio.run(scenario())
