"""The agent channel end to end with real processes: an engine, `stackwright-agent` with the libvirt
driver on qemu:///system, and nfs-ganesha serving primary and secondary storage.

The tests run in file order and share one engine, one zone/pod/KVM cluster and one host, each test
starting from the state the previous one left: enrolled host Up -> storage -> agent killed and
restarted -> engine restarted -> TLS refusals -> a guest on NFS primary storage.
The engine is the module's own (not the session's) because the tests restart it and lower its
ping settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from stackwright.protocol.pki import CertificateAuthority
from tests.support.kvm_cloud import kvm_site, setup_args
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow]

PING_INTERVAL = 2
PING_TIMEOUT = 2
# Scheduling on a loaded 2-core machine, the heartbeat monitor's tick and the API round trip.
SLACK = 10.0
VM_COMMANDS = {"deployVirtualMachine", "stopVirtualMachine", "startVirtualMachine", "destroyVirtualMachine"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, libvirtd, nfs_server):
    """Engine with ping.interval=2/ping.timeout=2, a zone with a KVM cluster, and storage scratch dirs."""

    def configure(engine):
        # The agent channel reads these when the engine starts.
        api = engine.client()
        api.updateConfiguration(name="ping.interval", value=str(PING_INTERVAL))
        api.updateConfiguration(name="ping.timeout", value=str(PING_TIMEOUT))
        engine.restart()
        return engine.client()

    with kvm_site(tmp_path_factory.mktemp("kvm-agent"), libvirtd, nfs_server, "kvm-agent", configure) as site:
        yield site


def meminfo_bytes():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def export_size(path):
    stats = os.statvfs(path)
    return stats.f_frsize * stats.f_blocks


# --- enrollment, registration, capacity ---------------------------------------------------


def test_enrolled_agent_registers_and_host_is_up_with_real_capacity(site):
    issued = site.token(description="kvm e2e")
    assert re.match(r"^[^.]+\.[0-9a-f]{64}$", issued["token"])
    assert issued["token"].endswith("." + issued["cafingerprint"])
    agent = site.agent = site.new_agent("agent1")
    status, result = agent.setup(*setup_args(site), token=issued["token"])
    assert status == 0, result
    assert result["enrolled"] and result["properties_changed"]
    guid = site.guid = result["guid"]
    for name in ("cloud.key", "cloud.crt", "cloud.ca.crt"):
        assert (agent.workdir / name).stat().st_mode & 0o777 == 0o600
    agent.start()

    added = site.api.addHost(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.cluster["id"],
                             hypervisor="KVM", url="http://127.0.0.1", username="root", password="unused")
    site.host = added["host"][0]
    try:
        host = site.wait_host("Up", 60)
    except AssertionError as exc:
        raise AssertionError("%s\n%s" % (exc, site.diagnostics())) from None
    assert (host["hypervisor"], host["resourcestate"], host["type"]) == ("KVM", "Enabled", "Routing")
    assert host["ipaddress"] == "127.0.0.1"
    assert host["clusterid"] == site.cluster["id"]
    assert host["cpunumber"] == os.cpu_count()
    assert host["memorytotal"] == pytest.approx(meminfo_bytes(), rel=0.02)
    assert host["cpuspeed"] > 0
    assert host["hypervisorversion"]
    assert issued["token"].split(".")[0] not in agent.log()
    assert "host=%s" % guid in agent.log() or guid in agent.log()


def test_primary_storage_up_with_the_size_of_the_export(site):
    assert site.host is not None, "needs the host of the previous test"
    pool = site.api.createStoragePool(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.cluster["id"],
                                      name="primary-%s" % uuid.uuid4().hex[:6], url=site.primary.url,
                                      scope="cluster")["storagepool"]
    site.pool = pool

    seen = {}

    def pool_up():
        seen.update(site.api.listStoragePools(id=pool["id"])["storagepool"][0])
        return dict(seen) if seen["state"] == "Up" else None

    try:
        listed = wait_for("primary storage %s Up" % site.primary.url, pool_up, 30)
    except AssertionError as exc:
        raise AssertionError("%s\npool as listed: %s\n%s" % (exc, seen, site.diagnostics())) from None
    assert listed["disksizetotal"] == export_size(site.primary.path)
    assert listed["type"] == "NetworkFilesystem"
    assert (listed["ipaddress"], listed["path"]) == ("127.0.0.1", str(site.primary.path))


def test_secondary_storage_is_checked_by_the_host(site):
    assert site.host is not None, "needs the host of the first test"
    store = site.api.addImageStore(provider="NFS", zoneid=site.zone["id"], url=site.secondary.url,
                                   name="secondary-%s" % uuid.uuid4().hex[:6])["imagestore"]

    seen = {}

    def checked():
        seen.update(site.api.listImageStores(id=store["id"])["imagestore"][0])
        return dict(seen) if seen.get("disksizetotal") else None

    try:
        listed = wait_for("image store %s checked" % site.secondary.url, checked, 30)
    except AssertionError as exc:
        raise AssertionError("%s\nstore as listed: %s\n%s" % (exc, seen, site.diagnostics())) from None
    assert listed["disksizetotal"] == export_size(site.secondary.path)
    # The write test leaves nothing behind.
    assert list(site.secondary.path.iterdir()) == []


# --- heartbeats --------------------------------------------------------------------------------


def test_killed_agent_makes_the_host_alert_then_down_and_a_new_one_brings_it_up(site):
    assert site.host is not None, "needs the host of the first test"
    site.agent.kill()
    killed = time.monotonic()
    # The connection drops at once (Alert); with no connection the host is Down once it
    # has been silent for ping.interval x ping.timeout.
    site.wait_host("Alert", PING_INTERVAL * PING_TIMEOUT + SLACK)
    site.wait_host("Down", PING_INTERVAL * PING_TIMEOUT + SLACK)
    assert time.monotonic() - killed <= PING_INTERVAL * PING_TIMEOUT + SLACK
    assert "host %s missed its pings" % site.guid in Path(site.engine.log_file).read_text()

    site.agent.start()
    host = site.wait_host("Up", 30)
    assert host["cpunumber"] == os.cpu_count()
    # A registration attaches the cluster's pools.
    if site.pool is not None:
        wait_for("pool Up after the agent registered again",
                 lambda: site.api.listStoragePools(id=site.pool["id"])["storagepool"][0]["state"] == "Up", 30)


def test_engine_restart_agent_reconnects_by_itself(site):
    assert site.host is not None, "needs the host of the first test"
    registered = "registered with engine 127.0.0.1:%d" % site.engine.agent_port
    before = site.agent.log().count(registered)
    pid = site.agent.proc.pid
    site.engine.stop()
    site.engine.start()
    site.api = site.engine.client()
    # The agent backs off and retries on its own; nothing is restarted on the host.
    wait_for("the agent registered again", lambda: site.agent.log().count(registered) > before,
             site.agent_backoff_max + SLACK)
    assert site.agent.proc.poll() is None and site.agent.proc.pid == pid
    host = site.wait_host("Up", 30)
    assert host["id"] == site.host["id"]
    assert "connection to the engine lost; retrying in" in site.agent.log()
    engine_log = Path(site.engine.log_file).read_text()
    assert "agent %s connected: host" % site.guid in engine_log.rsplit("management engine up", 1)[1]


# --- TLS -------------------------------------------------------------------------------------


def test_agent_with_a_certificate_of_another_ca_is_refused(site):
    foreign = CertificateAuthority.load_or_create(site.workdir / "foreign-ca")
    intruder = site.new_agent("intruder")
    guid = "intruder-%s" % uuid.uuid4().hex[:6]
    key, cert = foreign.issue_client_cert(guid)
    for name, data in (("cloud.key", key), ("cloud.crt", cert), ("cloud.ca.crt", foreign.ca_pem)):
        path = intruder.workdir / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        path.chmod(0o600)
    intruder.properties.write_text(
        "host=127.0.0.1\nport=%d\nguid=%s\nhypervisor.driver=simulator\nreconnect.backoff.initial=0.5\n"
        "tls.key.file=%s/cloud.key\ntls.cert.file=%s/cloud.crt\ntls.ca.file=%s/cloud.ca.crt\n"
        % (site.engine.agent_port, guid, intruder.workdir, intruder.workdir, intruder.workdir))
    intruder.start()
    wait_for("the intruder's connection refused", lambda: "retrying in" in intruder.log(), 30)
    wait_for("the engine's handshake failure logged",
             lambda: "TLS handshake with" in Path(site.engine.log_file).read_text(), 30)
    assert "TLS certificate check failed" in intruder.log()
    intruder.stop()
    hosts = site.api.listHosts(zoneid=site.zone["id"], type="Routing").get("host", [])
    assert [h["id"] for h in hosts] == [site.host["id"]]


def test_agent_without_a_certificate_cannot_register(site):
    """A plain TLS client without a certificate may enroll, never register."""
    import asyncio

    from stackwright.protocol.channel import Channel, ChannelClosed, RemoteError
    from stackwright.protocol.messages import HostInfo, RegisterRequest
    from stackwright.protocol.pki import enrollment_context

    async def register_without_certificate():
        reader, writer = await asyncio.open_connection("127.0.0.1", site.engine.agent_port, ssl=enrollment_context())

        async def no_requests(frame):
            return None

        channel = Channel(reader, writer, peer="engine", on_request=no_requests)
        task = asyncio.create_task(channel.run())
        try:
            info = HostInfo(hostname="nocert", hypervisor="KVM", hypervisor_version="1", arch="x86_64",
                            cpu_sockets=1, cpu_cores=1, cpu_threads=1, cpus=1, cpu_mhz=1000, memory_bytes=1 << 30,
                            private_ip="127.0.0.1", private_mac=None, bridges=[], accel="kvm")
            await channel.request(RegisterRequest(guid="nocert", host=info), 10)
        except RemoteError as exc:
            return exc.message
        except ChannelClosed as exc:
            return "closed: %s" % exc
        finally:
            await channel.close("done")
            await asyncio.gather(task, return_exceptions=True)
        return None

    refusal = asyncio.run(register_without_certificate())
    assert refusal and "connection has no client certificate" in refusal, refusal


def test_wrong_and_reused_tokens_are_refused(site):
    agent = site.new_agent("tokens")
    good = site.token()["token"]
    status, result = agent.setup(*setup_args(site), token=good)
    assert status == 0 and result["enrolled"], result
    certificate = (agent.workdir / "cloud.crt").read_bytes()

    status, result = agent.setup("--force-enroll", token=good)
    assert status == 1
    assert "refused enrollment: enrollment token is unknown or was already used" in result["msg"]

    wrong = "not-the-secret." + good.split(".")[1]
    status, result = agent.setup("--force-enroll", token=wrong)
    assert status == 1
    assert "refused enrollment: enrollment token is unknown or was already used" in result["msg"]
    assert "not-the-secret" not in result["msg"]

    bound = site.token(guid="some-other-host")["token"]
    status, result = agent.setup("--force-enroll", token=bound)
    assert status == 1
    assert "enrollment token was issued for host guid some-other-host" in result["msg"]
    # Refusals leave the certificate the host already had.
    assert (agent.workdir / "cloud.crt").read_bytes() == certificate


# --- a guest on NFS primary storage --------------------------------------------------------


def test_kvm_guest_with_its_disk_on_nfs_starts_and_stops(site):
    apis = {api["name"] for api in site.api.listApis()["api"]}
    missing = sorted(VM_COMMANDS - apis)
    if missing:
        pytest.skip("the engine has no %s yet" % ", ".join(missing))
    assert site.pool is not None, "needs the primary storage of an earlier test"
    # Guests need an enabled zone, and an Advanced zone without security groups needs Public traffic.
    site.api.addTrafficType(physicalnetworkid=site.physical_network["id"], traffictype="Public",
                            kvmnetworklabel="cloudbr0", fetch_result=True)
    site.api.updateZone(id=site.zone["id"], allocationstate="Enabled")
    template = next(t for t in site.api.listTemplates(templatefilter="all")["template"]
                    if t["name"] == "Blank disk (no OS)")
    offering = next(o for o in site.api.listServiceOfferings()["serviceoffering"] if o["name"] == "Small Instance")
    existing = site.virsh("list", "--all", "--name").split()
    vm = site.api.deployVirtualMachine(zoneid=site.zone["id"], templateid=template["id"],
                                       serviceofferingid=offering["id"], fetch_result=True)["virtualmachine"]
    try:
        if vm["instancename"] in existing:
            pytest.skip("a guest named %s already existed on %s before this test (another engine shares this "
                        "libvirtd), so this test cannot tell its guest apart" % (vm["instancename"], site.libvirtd.uri))
        assert vm["state"] == "Running", vm
        assert vm["hostid"] == site.host["id"]
        assert site.virsh("domstate", vm["instancename"]) == "running"
        assert site.virsh("domuuid", vm["instancename"]) == vm["id"]
        disks = [p for p in site.primary.path.rglob("*") if p.is_file()]
        assert disks, "no volume file on the NFS primary export %s" % site.primary.path

        stopped = site.api.stopVirtualMachine(id=vm["id"], fetch_result=True)["virtualmachine"]
        assert stopped["state"] == "Stopped"
        assert vm["instancename"] not in site.virsh("list", "--name").split()

        started = site.api.startVirtualMachine(id=vm["id"], fetch_result=True)["virtualmachine"]
        assert started["state"] == "Running"
        assert site.virsh("domstate", vm["instancename"]) == "running"
    finally:
        site.api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)


def test_kvm_guest_with_a_data_disk_gets_a_qcow2_as_vdb(site):
    """deployVirtualMachine diskofferingid=: the data volume is a qcow2 image of the offering's
    size on the NFS pool, attached to the running guest as the virtio disk vdb; an expunge
    deletes the root image and keeps the data volume, detached, until deleteVolume."""
    zone = site.api.listZones(id=site.zone["id"])["zone"][0]
    if zone["allocationstate"] != "Enabled" or site.pool is None:
        pytest.skip("needs the enabled zone and the primary storage of the earlier tests")
    template = next(t for t in site.api.listTemplates(templatefilter="all")["template"]
                    if t["name"] == "Blank disk (no OS)")
    offering = next(o for o in site.api.listServiceOfferings()["serviceoffering"] if o["name"] == "Small Instance")
    disk = site.api.createDiskOffering(name="data-1g-%s" % uuid.uuid4().hex[:6], disksize=1)["diskoffering"]
    vm = site.api.deployVirtualMachine(zoneid=site.zone["id"], templateid=template["id"],
                                       serviceofferingid=offering["id"], diskofferingid=disk["id"],
                                       fetch_result=True)["virtualmachine"]
    try:
        assert vm["state"] == "Running", vm
        volumes = {v["type"]: v for v in site.api.listVolumes(virtualmachineid=vm["id"])["volume"]}
        data = volumes["DATADISK"]
        assert (data["size"], data["deviceid"], data["storageid"]) == (1024 ** 3, 1, site.pool["id"])
        targets = site.virsh("domblklist", vm["instancename"]).split()
        assert "vda" in targets and "vdb" in targets
        [image] = [p for p in site.primary.path.rglob("*") if p.is_file() and data["id"] in p.name]
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(image)], capture_output=True,
                                         text=True, timeout=30, check=True).stdout)
        assert (info["format"], info["virtual-size"]) == ("qcow2", 1024 ** 3)
    finally:
        site.api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
        site.api.deleteDiskOffering(id=disk["id"])
    kept = site.api.listVolumes(id=data["id"])["volume"][0]
    assert kept["state"] == "Ready" and "virtualmachineid" not in kept
    assert [p for p in site.primary.path.rglob("*") if p.is_file() and data["id"] in p.name]
    site.api.deleteVolume(id=data["id"], fetch_result=True)
    assert not [p for p in site.primary.path.rglob("*") if p.is_file() and data["id"] in p.name]
