"""The real agent programs (setup + daemon, simulator driver) against a live listener over loopback TLS."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agentlink_helpers import Recorder, ServerThread, eventually_sync

from stackwright.management.agentlink import PingLevel
from stackwright.protocol import messages as m
from stackwright.protocol.pki import CertificateAuthority, split_token

BIN = Path(sys.executable).parent


def program(name, module):
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


SETUP = program("stackwright-setup-agent", "stackwright.agent.setup")
AGENT = program("stackwright-agent", "stackwright.agent.daemon")


@pytest.fixture
def engine(pki):
    events = Recorder()
    thread = ServerThread(pki, events, ping_interval=0.3, ping_timeout=2.0)
    thread.events = events
    yield thread
    thread.stop()


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def setup_agent(*args):
    return subprocess.run([*SETUP, *args], capture_output=True, text=True, timeout=60, check=False)


def start_agent(processes, properties, log_file):
    proc = subprocess.Popen([*AGENT, "--properties", str(properties), "--log-file", str(log_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    processes.append(proc)
    return proc


def test_agent_lifecycle(engine, processes, tmp_path, pki):
    events = engine.events
    properties = tmp_path / "etc" / "agent.properties"
    log_file = tmp_path / "log" / "agent.log"
    token = engine.call(pki.tokens.issue(ttl=300))
    common = ["--properties", str(properties), "--host", "127.0.0.1", "--port", str(engine.server.port),
              "--zone", "z1", "--pod", "p1", "--cluster", "c1", "--hypervisor-driver", "simulator", "--json"]

    # enroll, then idempotent re-run, then the spent token is refused
    first = setup_agent(*common, "--token", token)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["enrolled"] and result["changed"]
    guid = result["guid"]
    again = json.loads(setup_agent(*common, "--token", token).stdout)
    assert again == {"changed": False, "enrolled": False, "properties_changed": False, "guid": guid,
                     "properties": str(properties)}
    reused = setup_agent(*common, "--token", token, "--force-enroll")
    assert reused.returncode == 1
    assert "refused enrollment: enrollment token is unknown or was already used" in json.loads(reused.stdout)["msg"]
    wrong = setup_agent(*common, "--token", f"wrong-secret.{pki.ca.fingerprint}", "--force-enroll")
    assert wrong.returncode == 1 and "refused enrollment" in wrong.stdout

    # register and ping
    agent = start_agent(processes, properties, log_file)
    host_key = f"host-{guid}"
    eventually_sync(lambda: len([p for p in events.of("ping") if p[1] == host_key]) >= 2, what="pings")
    assert events.of("register")[0][1] == guid
    session = events.of("register")[0][2]
    assert session.registration.zone == "z1" and session.registration.host.hypervisor == "Simulator"
    spec = m.VmSpec(name="i-2-3-VM", uuid="u", vcpus=1, cpu_mhz=500, memory_mb=256)
    assert engine.call(engine.server.send(host_key, m.StartVm(spec=spec), 10)).state is m.VmState.RUNNING
    eventually_sync(lambda: events.of("ping")[-1][2] == {"i-2-3-VM": m.VmState.RUNNING}, what="VM state in ping")

    # SIGKILL: the engine notices the drop and the missed pings
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)
    eventually_sync(lambda: events.of("disconnect"), what="disconnect")
    assert events.of("disconnect") == [("disconnect", host_key, False)]
    eventually_sync(lambda: any(t[2] is PingLevel.ALERT for t in events.of("timeout")), what="ping timeout")
    assert events.of("timeout")[0][1] == host_key and events.of("timeout")[0][3] is None

    # restart: registers again and pings resume
    pings_before = len(events.of("ping"))
    agent = start_agent(processes, properties, log_file)
    eventually_sync(lambda: len(events.of("register")) == 2, what="re-registration")
    eventually_sync(lambda: len(events.of("ping")) >= pings_before + 2, what="pings after restart")
    assert engine.call(engine.server.send(host_key, m.CheckHealth(), 10)).healthy

    # SIGTERM: clean goodbye, exit 0
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    eventually_sync(lambda: len(events.of("disconnect")) == 2, what="clean disconnect")
    assert events.of("disconnect")[-1] == ("disconnect", host_key, True)
    log_text = log_file.read_text()
    assert f"registered with engine 127.0.0.1:{engine.server.port} as host {host_key}" in log_text
    assert "seq=1 executing StartVm" in log_text
    assert split_token(token)[0] not in log_text


def test_agent_with_a_foreign_certificate_is_refused(engine, processes, tmp_path, pki):
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign")
    key, cert, ca_file = pki.agent_files("intruder", ca=foreign)
    properties = tmp_path / "agent.properties"
    properties.write_text(
        f"host=127.0.0.1\nport={engine.server.port}\nguid=intruder\nhypervisor.driver=simulator\n"
        f"tls.key.file={key}\ntls.cert.file={cert}\ntls.ca.file={ca_file}\n"
    )
    log_file = tmp_path / "agent.log"
    agent = start_agent(processes, properties, log_file)
    eventually_sync(lambda: log_file.exists() and "retrying in" in log_file.read_text(), what="refused connection")
    assert engine.events.of("register") == []
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0


def test_agent_without_enrollment_explains_what_to_do(processes, tmp_path):
    properties = tmp_path / "agent.properties"
    properties.write_text(f"host=127.0.0.1\nguid=g\ntls.cert.file={tmp_path}/missing.crt\n"
                          f"tls.key.file={tmp_path}/missing.key\ntls.ca.file={tmp_path}/missing.ca\n")
    proc = subprocess.run([*AGENT, "--properties", str(properties), "--log-file", str(tmp_path / "a.log")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert f"agent certificate {tmp_path}/missing.crt is missing" in proc.stderr
    assert "Enroll this host first: stackwright-setup-agent --token <token from the engine>" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = subprocess.run([*AGENT, "--properties", str(tmp_path / "nope"), "--log-file", "-"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert missing.returncode == 1 and "does not exist; create it with stackwright-setup-agent" in missing.stderr
    assert os.path.exists(tmp_path / "a.log")
