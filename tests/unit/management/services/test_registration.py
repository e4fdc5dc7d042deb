"""The registration service: registrations in batches (one refusal undoes nothing else),
heartbeats written together, silences turned into host states. Uses its own database."""

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Cluster, Host
from stackwright.management.services.configuration import GlobalSettings
from stackwright.management.services.registration import AgentRefused, RegistrationService
from stackwright.protocol import messages as m
from tests.support.rows import zone_and_pod
from tests.support.servers import registered_server


@pytest.fixture
def registration(tmp_path):
    db = Database("sqlite:///%s" % (tmp_path / "cloud.db"))
    db.upgrade()
    with db.transaction() as s:
        zone, pod = zone_and_pod(s, "z1", "p1")
        kvm = Cluster(name="kvm", pod_id=pod.id, zone_id=zone.id, hypervisor="KVM")
        sim = Cluster(name="sim", pod_id=pod.id, zone_id=zone.id, hypervisor="Simulator")
        s.add_all([kvm, sim])
        s.flush()
        for name, guid, address in (("k1", "guid-k1", "10.1.0.1"), ("k2", None, "10.1.0.2"), ("k3", "guid-k3", "10.1.0.3")):
            s.add(Host(name=name, guid=guid, zone_id=zone.id, pod_id=pod.id, cluster_id=kvm.id, hypervisor="KVM",
                       url="http://%s" % address, ip_address=address, state="Disconnected", resource_state="Enabled",
                       details={}))
    yield RegistrationService(SimpleNamespace(db=db, settings=GlobalSettings(db), cluster=registered_server(db)))
    db.dispose()


def request(guid, address, hypervisor="KVM", zone="", cluster=""):
    info = m.HostInfo(hostname=guid.removeprefix("guid-"), private_ip=address, private_mac="02:00:00:00:00:01",
                      hypervisor=hypervisor, hypervisor_version="1", arch="x86_64", cpu_sockets=1, cpu_cores=2,
                      cpu_threads=2, cpus=2, cpu_mhz=1000, memory_bytes=1 << 30)
    return m.RegisterRequest(guid=guid, host=info, zone=zone, cluster=cluster, agent_version="1")


def states(registration):
    with registration.db.transaction(readonly=True) as s:
        return dict(s.execute(select(Host.name, Host.state).where(Host.removed.is_(None))).all())


def test_a_batch_registers_each_agent_on_its_own(registration):
    results = registration.register_many([
        request("guid-k1", "10.1.0.1", zone="z1"),            # its host, by guid
        request("guid-k2", "10.1.0.2"),                       # its host, by address (no guid yet)
        request("guid-k3", "10.1.0.3", zone="elsewhere"),     # the wrong zone: refused
        request("guid-x", "10.9.9.9"),                        # no host for it yet
        request("guid-s", "10.9.9.8", hypervisor="Simulator", cluster="sim"),   # joins its cluster
    ])
    assert [r[1] if isinstance(r, tuple) else type(r) for r in results] == ["k1", "k2", AgentRefused, "", "s"]
    assert "names zone 'elsewhere' but host k3 was added to zone z1" in str(results[2])
    assert results[3] == (None, "")
    assert states(registration) == {"k1": "Up", "k2": "Up", "k3": "Disconnected", "s": "Up"}


def test_silences_and_heartbeats(registration):
    registration.register_many([request("guid-k1", "10.1.0.1"), request("guid-k3", "10.1.0.3")])
    assert registration.host_state("guid-k1", "Alert") == "Alert"
    assert registration.host_state("guid-k3", "Down") == "Down"
    assert registration.host_state("no-such-guid", "Down") is None
    # guid-k1 pinged again; guid-k3 is Down: only a registration or its own ping brings it back.
    registration.record_heartbeats({"guid-k1": 1_700_000_000, "guid-k3": 1_700_000_000}, {"guid-k1"})
    assert states(registration) == {"k1": "Up", "k2": "Disconnected", "k3": "Down"}
    with registration.db.transaction(readonly=True) as s:
        assert s.execute(select(Host.last_pinged).where(Host.name == "k3")).scalar_one() == 1_700_000_000
    registration.disconnect_all(["guid-k1", "guid-k3"])
    assert states(registration) == {"k1": "Disconnected", "k2": "Disconnected", "k3": "Disconnected"}
