import pytest

from stackwright.agent.hypervisor import base as hv
from stackwright.agent.storage import base as st
from stackwright.protocol import messages as m
from stackwright.protocol.codec import CodecError, decode, encode_as
from stackwright.protocol.framing import decode_payload, encode_frame, Frame

HOST = m.HostInfo(
    hostname="kvm1", hypervisor="KVM", hypervisor_version="8.2.0", arch="x86_64", cpu_sockets=1, cpu_cores=2,
    cpu_threads=1, cpus=2, cpu_mhz=2400, memory_bytes=8 << 30, private_ip="10.0.0.5", private_mac="52:54:00:aa:bb:cc",
    bridges=["cloudbr0"], accel="kvm",
)
POOL = m.PoolSpec(uuid="p-1", url="nfs://127.0.0.1:2049/export/primary", mode="userspace")
SPEC = m.VmSpec(
    name="i-2-10-VM", uuid="9f1c", vcpus=2, cpu_mhz=1000, memory_mb=512,
    disks=[
        m.DiskSpec(device="vda", source=m.NfsSource(server="127.0.0.1", port=2049, export="/export", path="v.qcow2")),
        m.DiskSpec(device="vdb", source=m.FileSource(path="/mnt/p/d.raw"), format="raw", size_bytes=1 << 30),
    ],
    nics=[m.NicSpec(mac="02:00:00:00:00:01", bridge="cloudbr0")],
    vnc_password="s3cret",
)

TEMPLATE = m.TemplateLocation(store_url="nfs://192.0.2.5/secondary", directory="template/tmpl/2/201",
                              file_name="t.qcow2", format="qcow2")

SAMPLES = [
    m.ErrorAnswer(code="vm_not_found", message="VM x does not exist"),
    m.Ack(),
    m.Goodbye(reason="bye"),
    m.GetCa(),
    m.CaAnswer(ca_pem="-----BEGIN CERTIFICATE-----"),
    m.Enroll(token="t", csr_pem="csr", guid="g", hostname="h"),
    m.EnrollAnswer(cert_pem="c", ca_pem="a"),
    m.RegisterRequest(guid="g", zone="z", pod="p", cluster="c", host=HOST, vms={"i-1": m.VmState.RUNNING},
                      agent_version="0.1.0", private_network_device="cloudbr0"),
    m.RegisterAnswer(host_id="h-1", host_name="kvm1", ping_interval=60.0),
    m.Ping(vms={"i-1": m.VmState.STOPPED, "i-2": m.VmState.RUNNING}),
    m.Ping(vms={}, vms_reported=False),
    m.Ping(vms={"i-3": m.VmState.RUNNING}, io_paused=["i-3"]),
    m.PingAnswer(),
    m.Ready(),
    m.CheckHealth(),
    m.ReadyAnswer(healthy=True, detail="ok", host=HOST),
    m.GetHostStats(),
    m.HostStatsAnswer(stats=m.HostStats(cpu_utilization=12.5, memory_total_bytes=100, memory_free_bytes=50)),
    m.StartVm(spec=SPEC),
    m.StopVm(name="i-1", force=True),
    m.RebootVm(name="i-1"),
    m.QueryVm(name="i-1"),
    m.GetVmConsole(name="i-1"),
    m.VmConsoleAnswer(name="i-1", address="10.0.0.5", port=5901),
    m.PrepareForMigration(spec=SPEC),
    m.MigrateVm(name="i-1", address="192.0.2.12", guid="kvm-2", vnc_listen="192.0.2.12", timeout=60.0),
    m.VmStateAnswer(name="i-1", state=m.VmState.STOPPING),
    m.AttachPool(pool=POOL),
    m.GetPoolStats(pool=POOL),
    m.DetachPool(pool=POOL),
    m.CheckSecondary(url="nfs://127.0.0.1/export/secondary"),
    m.PoolStatsAnswer(stats=m.PoolStats(capacity_bytes=10, used_bytes=4, available_bytes=6)),
    m.CreateVolume(pool=POOL, name="vol-1", size_bytes=1 << 30, format="raw"),
    m.DeleteVolume(pool=POOL, name="vol-1"),
    m.VolumeAnswer(disk=SPEC.disks[0]),
    m.CheckHeartbeat(pool=m.PoolSpec(uuid="p-1", url="nfs://127.0.0.1/export/primary", mode="auto"),
                     host="host-guid-1", volumes=["vol-1"], window=5.0),
    m.HeartbeatAnswer(age=12.5, activity=True),
    m.HeartbeatAnswer(),
    m.ResumeIoPaused(),
    m.IoPausedAnswer(names=["i-2-7-VM"]),
    m.CreateVolume(pool=POOL, name="vol-2", size_bytes=1 << 30, backing="template-1"),
    m.VolumeAnswer(disk=m.DiskSpec(device="vda", source=m.FileSource(path="/mnt/p/vol-2"), backing=m.BackingSpec(
        source=m.NfsSource(server="192.0.2.5", export="/primary", path="template-1")))),
    m.CopyTemplate(pool=POOL, template=TEMPLATE, name="template-1"),
    m.DownloadTemplate(location=TEMPLATE, url="https://images.example/t.qcow2", checksum="{SHA-256}" + "0" * 64,
                       max_bytes=50 << 30, properties={"id": "201"}, allowed_sites=["127.0.0.0/8"],
                       management_networks={"192.0.2.0/24": "pod-1"}),
    m.QueryDownload(location=TEMPLATE),
    m.DownloadStatus(state="failed", downloaded_bytes=10, total_bytes=20, error="HTTP error 404",
                     error_code=""),
    m.DeleteTemplate(location=TEMPLATE),
    m.AttachDisk(name="i-1", disk=m.DiskSpec(device="vdb", source=m.NfsSource(server="192.0.2.5", export="/primary",
                                                                              path="vol-3"))),
    m.DetachDisk(name="i-1", device="vdb", timeout=10.0),
    m.QueryDisks(name="i-1"),
    m.VmDisksAnswer(name="i-1", devices=["vda", "vdb"]),
    m.ResizeVolume(pool=POOL, name="vol-3", size_bytes=2 << 30, shrink=False, vm="i-1", device="vdb"),
    m.QueryVolume(pool=POOL, name="vol-3"),
    m.VolumeSizeAnswer(size_bytes=2 << 30),
]


def test_every_message_type_has_a_sample():
    assert {type(s).__name__ for s in SAMPLES} == set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip_through_a_frame(message):
    frame = Frame(seq=42, message=message, reply=isinstance(message, m.Answer))
    decoded = decode_payload(encode_frame(frame)[4:])
    assert decoded == frame
    assert type(decoded.message) is type(message)


def test_every_request_declares_an_answer_and_origin():
    for cls in m.MESSAGE_TYPES.values():
        if issubclass(cls, m.Request):
            assert cls.origin in (m.ENGINE, m.AGENT)
            assert issubclass(cls.answer, m.Answer) and cls.answer is not m.Answer, cls


def test_disk_source_union_is_tagged_and_checked():
    body = encode_as(SPEC, m.VmSpec)
    assert body["disks"][0]["source"]["@type"] == "NfsSource"
    body["disks"][1]["source"]["@type"] = "CephSource"
    with pytest.raises(CodecError, match=r"VmSpec.disks\[1\].source: @type 'CephSource' is not one of"):
        decode(m.VmSpec, body)


def test_type_errors_name_the_path():
    body = encode_as(SPEC, m.VmSpec)
    body["disks"][0]["size_bytes"] = "1G"
    with pytest.raises(CodecError, match=r"VmSpec.disks\[0\].size_bytes: expected an integer, got the string '1G'"):
        decode(m.VmSpec, body)
    with pytest.raises(CodecError, match=r"StopVm.force: expected bool"):
        decode(m.StopVm, {"name": "x", "force": 1})
    with pytest.raises(CodecError, match=r"QueryVm.name: missing required field"):
        decode(m.QueryVm, {})
    with pytest.raises(CodecError, match=r"VmStateAnswer.state: 'Paused' is not one of"):
        decode(m.VmStateAnswer, {"name": "x", "state": "Paused"})


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert decode(m.QueryVm, {"name": "i-1", "added_later": True}) == m.QueryVm(name="i-1")


def test_drivers_use_the_protocol_value_types():
    for name in ("HostInfo", "HostStats", "VmSpec", "DiskSpec", "NicSpec", "NfsSource", "FileSource", "VmState"):
        assert getattr(hv, name) is getattr(m, name)
    assert st.PoolSpec is m.PoolSpec and st.PoolStats is m.PoolStats
