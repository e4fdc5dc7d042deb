"""Enrollment and reconnection as the agent does them, against a live listener."""

import asyncio
import stat

import pytest
from agentlink_helpers import Recorder, eventually, start_server

from stackwright.agent.config import AgentConfig
from stackwright.agent.errors import EnrollmentError
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.link import Backoff, Registration, tcp_connector
from stackwright.agent.setup import already_enrolled, enroll
from stackwright.simulation.agent import SimulatedAgent
from stackwright.protocol import messages as m
from stackwright.protocol.pki import CertificateAuthority, EnrollmentTokens, client_context, split_token


def agent_config(tmp_path, port, guid="guid-e1", hosts=("127.0.0.1",)):
    return AgentConfig.from_properties({
        "host": ",".join(hosts), "port": str(port), "guid": guid,
        "tls.key.file": str(tmp_path / "agent" / "cloud.key"),
        "tls.cert.file": str(tmp_path / "agent" / "cloud.crt"),
        "tls.ca.file": str(tmp_path / "agent" / "cloud.ca.crt"),
    })


def test_enrollment_gives_a_working_certificate(pki, tmp_path):
    async def scenario():
        events = Recorder()
        server = await start_server(pki, events)
        config = agent_config(tmp_path, server.port)
        token = await pki.tokens.issue(ttl=60)
        assert not already_enrolled(config, pki.ca.fingerprint)
        assert await enroll(config, token) == f"127.0.0.1:{server.port}"
        for path in (config.key_file, config.cert_file, config.ca_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert already_enrolled(config, pki.ca.fingerprint)
        assert pki.ca.verify(config.cert_file.read_bytes()) == "guid-e1"
        context = client_context(config.ca_file, config.cert_file, config.key_file)
        agent = SimulatedAgent(Registration(guid="guid-e1"), tcp_connector(["127.0.0.1"], server.port, context))
        await agent.start(wait_registered=10)
        await agent.stop()
        # the token was spent
        with pytest.raises(EnrollmentError, match="refused enrollment: enrollment token is unknown or was already used"):
            await enroll(config, token)
        await server.stop()

    asyncio.run(scenario())


def test_wrong_token_is_refused(pki, tmp_path):
    async def scenario():
        server = await start_server(pki, Recorder())
        config = agent_config(tmp_path, server.port)
        with pytest.raises(EnrollmentError, match="refused enrollment: enrollment token is unknown"):
            await enroll(config, f"not-the-secret.{pki.ca.fingerprint}")
        assert not config.cert_file.exists()
        with pytest.raises(EnrollmentError, match="enrollment token is malformed"):
            await enroll(config, "not-a-token")
        await server.stop()

    asyncio.run(scenario())


def test_token_for_another_engine_is_not_sent(pki, tmp_path):
    other_ca = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    other_tokens = EnrollmentTokens(pki.store, other_ca)  # same store: the engine would accept the secret

    async def scenario():
        server = await start_server(pki, Recorder())
        config = agent_config(tmp_path, server.port)
        token = await other_tokens.issue(ttl=60)
        with pytest.raises(EnrollmentError, match=f"presents CA {pki.ca.fingerprint}, but the token expects"):
            await enroll(config, token)
        # the secret never reached the engine, so it is still unused
        secret, _ca_fingerprint = split_token(token)
        await pki.tokens.redeem(secret, "guid-e1")
        await server.stop()

    asyncio.run(scenario())


def test_enrollment_tries_the_next_engine(pki, tmp_path):
    async def scenario():
        server = await start_server(pki, Recorder())
        # the listener is bound to 127.0.0.1 only, so 127.0.0.2 refuses the connection
        config = agent_config(tmp_path, server.port, hosts=("127.0.0.2", "127.0.0.1"))
        assert await enroll(config, await pki.tokens.issue(ttl=60), timeout=5) == f"127.0.0.1:{server.port}"
        await server.stop()

    asyncio.run(scenario())


def test_enrollment_uses_each_engine_address_with_its_own_port(pki, tmp_path):
    async def scenario():
        server = await start_server(pki, Recorder())
        # `host` as several engines are listed: HOST:PORT entries, `port` only for those without one
        config = agent_config(tmp_path, 9, hosts=("127.0.0.2:%d" % server.port, "127.0.0.1:%d" % server.port))
        assert await enroll(config, await pki.tokens.issue(ttl=60), timeout=5) == f"127.0.0.1:{server.port}"
        assert pki.ca.verify(config.cert_file.read_bytes()) == "guid-e1"
        await server.stop()

    asyncio.run(scenario())


def test_agent_reconnects_without_touching_guests(pki):
    async def scenario():
        events = Recorder()
        server = await start_server(pki, events)
        port = server.port
        driver = SimulatorDriver(hostname="kvm-r")
        agent = SimulatedAgent(
            Registration(guid="guid-r"), tcp_connector(["127.0.0.2", "127.0.0.1"], port, pki.client_context("guid-r")),
            driver, backoff=Backoff(0.1, 0.2),
        )
        await agent.start(wait_registered=10)
        spec = m.VmSpec(name="i-1-1-VM", uuid="u", vcpus=1, cpu_mhz=100, memory_mb=128)
        await server.send("host-guid-r", m.StartVm(spec=spec), timeout=10)
        await server.stop()
        await eventually(lambda: not agent.link.registered.is_set())
        # engine away: the guest keeps running and is not restarted
        assert driver.query("i-1-1-VM").value == "Running"
        server = await start_server(pki, events, port=port)
        await eventually(agent.link.registered.is_set, timeout=15)
        await eventually(lambda: any(c[2] == {"i-1-1-VM": m.VmState.RUNNING} for c in events.of("ping")[-1:]))
        assert driver.boot_count("i-1-1-VM") == 1
        assert [c[1] for c in events.of("register")] == ["guid-r", "guid-r"]
        await agent.stop()
        await server.stop()

    asyncio.run(scenario())
