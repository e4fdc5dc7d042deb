import asyncio
import json
import logging
import ssl
import struct

import pytest

from agentlink_helpers import RawClient, Recorder, eventually, start_server

from stackwright.agent.link import Registration, tcp_connector
from stackwright.simulation.agent import SimulatedAgent
from stackwright.management.agentlink import AgentUnavailable, CommandTimeout, PingLevel, RemoteError
from stackwright.protocol import messages as m
from stackwright.protocol.codec import encode_as
from stackwright.protocol.pki import CertificateAuthority

HOST = m.HostInfo(
    hostname="raw", hypervisor="Simulator", hypervisor_version="1.0", arch="x86_64", cpu_sockets=1, cpu_cores=1,
    cpu_threads=1, cpus=1, cpu_mhz=1000, memory_bytes=1 << 30, private_ip=None, private_mac=None,
)


def register_request(guid):
    return m.RegisterRequest(guid=guid, host=HOST)


def tls_agent(pki, server, guid):
    connector = tcp_connector(["127.0.0.1"], server.port, pki.client_context(guid))
    return SimulatedAgent(m_registration(guid), connector)


def m_registration(guid):
    return Registration(guid=guid, zone="z1", pod="p1", cluster="c1")


def test_register_ping_command_and_clean_disconnect(pki):
    async def scenario():
        events = Recorder()
        server = await start_server(pki, events)
        agent = tls_agent(pki, server, "guid-1")
        try:
            await agent.start(wait_registered=10)
            assert agent.host_id == "host-guid-1"
            session = server.session("host-guid-1")
            assert session.identity == "guid-1" and session.registration.zone == "z1"
            spec = m.VmSpec(name="i-2-10-VM", uuid="u-1", vcpus=1, cpu_mhz=500, memory_mb=256)
            answer = await server.send("host-guid-1", m.StartVm(spec=spec), timeout=10)
            assert answer == m.VmStateAnswer(name="i-2-10-VM", state=m.VmState.RUNNING)
            await eventually(lambda: any(c[2] == {"i-2-10-VM": m.VmState.RUNNING} for c in events.of("ping")))
            with pytest.raises(RemoteError) as failure:
                await server.send("host-guid-1", m.RebootVm(name="i-9-VM"), timeout=10)
            assert failure.value.code == "vm_not_found"
            assert "i-9-VM does not exist" in failure.value.message
        finally:
            await agent.stop()
        await eventually(lambda: events.of("disconnect"))
        assert events.of("disconnect") == [("disconnect", "host-guid-1", True)]
        with pytest.raises(AgentUnavailable, match="host host-guid-1 is not connected"):
            await server.send("host-guid-1", m.QueryVm(name="x"))
        await server.stop()

    asyncio.run(scenario())


BAD_FRAMES = {
    "garbage": (struct.pack("!I", 8) + b"not json", "frame is not valid JSON"),
    "oversized": (struct.pack("!I", 10_000_000), "frame of 10000000 bytes exceeds the limit of 65536 bytes"),
    "version": (None, "protocol version 99 is not supported"),
    "unknown type": (None, "unknown message type 'Reformat'"),
    "bad body": (None, "invalid RegisterRequest message: RegisterRequest.host: missing required field"),
    "engine command": (None, "an agent may not send StartVm"),
}


def raw_envelope(kind):
    envelope = {"v": 1, "seq": 1, "type": "Ping", "reply": False, "body": {}}
    if kind == "version":
        envelope["v"] = 99
    elif kind == "unknown type":
        envelope["type"] = "Reformat"
    elif kind == "bad body":
        envelope.update(type="RegisterRequest", body={"guid": "g"})
    elif kind == "engine command":
        spec = m.VmSpec(name="x", uuid="u", vcpus=1, cpu_mhz=1, memory_mb=64)
        envelope.update(type="StartVm", body=encode_as(m.StartVm(spec=spec), m.StartVm))
    data = json.dumps(envelope).encode()
    return struct.pack("!I", len(data)) + data


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
def test_bad_frames_close_only_that_session(pki, caplog, kind):
    data, reason = BAD_FRAMES[kind]

    async def scenario():
        events = Recorder()
        server = await start_server(pki, events, max_frame=65536)
        bystander = tls_agent(pki, server, "bystander")
        await bystander.start(wait_registered=10)
        client = await RawClient.connect(server.port, pki.client_context("rogue"))
        await client.send_raw(data if data is not None else raw_envelope(kind))
        frames = await client.receive_until_closed()
        await client.close()
        goodbyes = [f.message for f in frames if isinstance(f.message, m.Goodbye)]
        assert goodbyes and reason in goodbyes[0].reason
        # the listener and the other session are unaffected
        answer = await server.send("host-bystander", m.CheckHealth(), timeout=10)
        assert answer.healthy
        late = tls_agent(pki, server, "late")
        await late.start(wait_registered=10)
        await late.stop()
        await bystander.stop()
        await server.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert any(reason in r.getMessage() and "closing session with" in r.getMessage() for r in caplog.records)


def test_connection_without_certificate_may_only_enroll(pki):
    async def scenario():
        server = await start_server(pki, Recorder())
        client = await RawClient.connect(server.port, enrolling=True)
        await client.send(m.GetCa(), seq=1)
        answer = (await client.receive()).message
        assert answer == m.CaAnswer(ca_pem=pki.ca.ca_pem)
        await client.send(register_request("g1"), seq=2)
        frames = await client.receive_until_closed()
        assert isinstance(frames[0].message, m.ErrorAnswer)
        assert frames[0].message.code == "certificate_required"
        assert "enroll the host first (stackwright-setup-agent --token <token>)" in frames[0].message.message
        await client.close()
        await server.stop()

    asyncio.run(scenario())


def test_certificate_from_another_ca_fails_the_handshake(pki, tmp_path, caplog):
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign")

    async def scenario():
        server = await start_server(pki, Recorder())
        context = pki.client_context("g1", ca=foreign)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            client = await RawClient.connect(server.port, context)
            await client.send(register_request("g1"))
            frames = await client.receive_until_closed()
            assert frames == []
            raise ConnectionError("closed without an answer")
        await server.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert any("TLS handshake with 127.0.0.1:" in r.getMessage() for r in caplog.records)


def test_guid_must_match_the_certificate(pki):
    async def scenario():
        server = await start_server(pki, Recorder())
        client = await RawClient.connect(server.port, pki.client_context("guid-a"))
        await client.send(register_request("guid-b"))
        answer = (await client.receive_until_closed())[0].message
        assert answer.code == "identity_mismatch"
        assert "issued to guid guid-a but the agent registers as guid-b" in answer.message
        await server.stop()

    asyncio.run(scenario())


def test_engine_can_refuse_a_registration(pki):
    async def scenario():
        events = Recorder()
        events.refuse = "zone z9 does not exist"
        server = await start_server(pki, events)
        client = await RawClient.connect(server.port, pki.client_context("g1"))
        await client.send(register_request("g1"))
        answer = (await client.receive_until_closed())[0].message
        assert answer == m.ErrorAnswer(code="registration_refused", message="zone z9 does not exist")
        assert server.sessions() == []
        await server.stop()

    asyncio.run(scenario())


def test_ping_before_registration_closes_the_session(pki):
    async def scenario():
        server = await start_server(pki, Recorder())
        client = await RawClient.connect(server.port, pki.client_context("g1"))
        await client.send(m.Ping())
        frames = await client.receive_until_closed()
        assert frames[-1].message == m.Goodbye(reason="Ping before RegisterRequest")
        await server.stop()

    asyncio.run(scenario())


def test_unregistered_connection_is_closed_after_the_handshake_timeout(pki):
    async def scenario():
        server = await start_server(pki, Recorder(), handshake_timeout=0.3)
        client = await RawClient.connect(server.port, pki.client_context("g1"))
        frames = await client.receive_until_closed()
        assert frames[-1].message == m.Goodbye(reason="no registration within 0.3 s")
        await server.stop()

    asyncio.run(scenario())


def test_silent_agent_times_out_a_command(pki):
    async def scenario():
        server = await start_server(pki, Recorder())
        client = await RawClient.connect(server.port, pki.client_context("mute"))
        await client.send(register_request("mute"))
        assert isinstance((await client.receive()).message, m.RegisterAnswer)
        with pytest.raises(CommandTimeout, match="host host-mute did not answer QueryVm within 0.2 s"):
            await server.send("host-mute", m.QueryVm(name="x"), timeout=0.2)
        await client.close()
        await server.stop()

    asyncio.run(scenario())


def test_a_reconnecting_host_replaces_its_old_session(pki):
    async def scenario():
        events = Recorder()
        server = await start_server(pki, events)
        first = await RawClient.connect(server.port, pki.client_context("g1"))
        await first.send(register_request("g1"))
        await first.receive()
        second = await RawClient.connect(server.port, pki.client_context("g1"))
        await second.send(register_request("g1"))
        assert isinstance((await second.receive()).message, m.RegisterAnswer)
        frames = await first.receive_until_closed()
        assert frames[-1].message == m.Goodbye(reason="replaced by a new connection from the same host")
        assert server.session("host-g1").channel.writer is not first.writer
        assert len(server.sessions()) == 1
        await second.close()
        await server.stop()

    asyncio.run(scenario())


def test_heartbeat_monitor_levels(pki):
    async def scenario():
        events = Recorder()
        # a long interval keeps the background tick out of the way; check() is driven by hand
        server = await start_server(pki, events, ping_interval=600, ping_timeout=2.5)
        client = await RawClient.connect(server.port, pki.client_context("g1"))
        await client.send(register_request("g1"))
        await client.receive()
        monitor = server.monitor
        now = asyncio.get_running_loop().time()
        monitor._last["host-g1"] = now - 1000  # alert after 1500 s
        await monitor.check()
        assert events.of("timeout") == []
        monitor._last["host-g1"] = now - 1600
        await monitor.check()
        await monitor.check()
        assert [(c[1], c[2]) for c in events.of("timeout")] == [("host-g1", PingLevel.ALERT)]
        assert events.of("timeout")[0][3] is server.session("host-g1")
        await client.send(m.Ping(vms={}), seq=2)
        assert isinstance((await client.receive()).message, m.PingAnswer)
        assert monitor.level("host-g1") is None
        monitor._last["host-g1"] = now - 3100
        await monitor.check()
        assert [c[2] for c in events.of("timeout")] == [PingLevel.ALERT, PingLevel.DOWN]
        frames = await client.receive_until_closed()
        assert frames[-1].message.reason.startswith("no ping for")
        await eventually(lambda: events.of("disconnect"))
        assert events.of("disconnect") == [("disconnect", "host-g1", False)]
        await server.stop()

    asyncio.run(scenario())


def test_hosts_served_before_a_start_are_watched_until_they_come_back(pki, caplog):
    async def scenario():
        events = Recorder()
        # silence counts after interval x timeout (1500 s), or after the grace when that is longer
        server = await start_server(pki, events, ping_interval=600, ping_timeout=2.5, reconnect_grace=2000)
        client = await RawClient.connect(server.port, pki.client_context("g1"))
        await client.send(register_request("g1"))
        await client.receive()
        monitor = server.monitor
        seen_at = monitor._last["host-g1"]
        monitor.expect(["host-g1", "host-gone"])
        assert monitor._last["host-g1"] == seen_at          # back already: watched as any other
        now = asyncio.get_running_loop().time()
        assert monitor._last["host-gone"] - now == pytest.approx(500, abs=5)
        await monitor.check()
        assert events.of("timeout") == []
        monitor._last["host-gone"] -= 2001
        with caplog.at_level(logging.WARNING):
            await monitor.check()
        assert [c[1:] for c in events.of("timeout")] == [("host-gone", PingLevel.ALERT, None)]
        assert "host host-gone has not reconnected since the engine started" in caplog.text
        await client.close()
        await server.stop()

    asyncio.run(scenario())


def test_plain_tcp_is_explicit_and_logged(pki, caplog):
    async def scenario():
        server = await start_server(pki, Recorder(), tls=False)
        agent = SimulatedAgent(m_registration("plain"), tcp_connector(["127.0.0.1"], server.port, None))
        await agent.start(wait_registered=10)
        await agent.stop()
        await server.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert any("runs WITHOUT TLS" in r.getMessage() for r in caplog.records)


def test_in_process_simulated_agent_uses_the_same_sessions(pki):
    async def scenario():
        events = Recorder()
        server = await start_server(pki, events)
        agent = SimulatedAgent.local(server.connect_local, m_registration("sim-1"))
        await agent.start(wait_registered=10)
        session = server.session("host-sim-1")
        assert session.identity == "sim-1" and session.peer == "local:sim-1"
        stats = await server.send("host-sim-1", m.GetHostStats(), timeout=10)
        assert stats.stats.memory_total_bytes == agent.driver.memory_mb << 20
        await agent.stop()
        await eventually(lambda: events.of("disconnect"))
        await server.stop()

    asyncio.run(scenario())
