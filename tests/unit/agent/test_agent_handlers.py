import asyncio

from stackwright.agent.errors import StorageUnreachable
from stackwright.agent.handlers import HANDLERS, Dispatcher, HandlerContext
from stackwright.agent.hypervisor.base import DiskSpec, FileSource
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.storage.base import PoolSpec, PoolStats, StorageDriver
from stackwright.protocol import messages as m
from stackwright.protocol.framing import Frame


class DirectoryStorage(StorageDriver):
    """A storage driver over a local directory: enough to exercise the handlers' wiring."""

    kind = "directory"

    def __init__(self, root):
        self.root = root
        self.attached = []

    def attach(self, pool):
        self.attached.append(pool)
        return self.stats(pool)

    def stats(self, pool):
        return PoolStats(capacity_bytes=100, used_bytes=len(list(self.root.iterdir())), available_bytes=50)

    def detach(self, pool):
        self.attached.remove(pool)

    def create_volume(self, pool, name, size_bytes, fmt="qcow2"):
        path = self.root / f"{name}.{fmt}"
        path.write_bytes(b"")
        return DiskSpec(device="vda", source=FileSource(path=str(path)), format=fmt, size_bytes=size_bytes)

    def delete_volume(self, pool, name):
        for path in self.root.glob(f"{name}.*"):
            path.unlink()

    def check_secondary(self, url):
        raise StorageUnreachable(f"cannot reach {url}: server 10.9.9.9 export /sec is not exported")


def dispatcher(tmp_path, storage_mode="auto"):
    storage = DirectoryStorage(tmp_path)
    context = HandlerContext(SimulatorDriver(hostname="h1"), lambda: storage, storage_mode=storage_mode)
    return Dispatcher(context, workers=2, host_label="guid-1"), storage


POOL = m.PoolSpec(uuid="p1", url="nfs://127.0.0.1/export")


def test_every_engine_command_has_a_handler():
    commands = {cls for cls in m.MESSAGE_TYPES.values() if issubclass(cls, m.Request) and cls.origin == m.ENGINE}
    assert commands == set(HANDLERS)


def test_vm_commands(tmp_path, caplog):
    d, _storage = dispatcher(tmp_path)
    spec = m.VmSpec(name="i-1-2-VM", uuid="u", vcpus=1, cpu_mhz=500, memory_mb=128,
                    disks=[m.DiskSpec(device="vda", source=m.FileSource(path="/x.qcow2"))])
    with caplog.at_level("INFO"):
        assert d.run(m.StartVm(spec=spec), seq=7) == m.VmStateAnswer(name="i-1-2-VM", state=m.VmState.RUNNING)
    assert any("host=guid-1 seq=7 executing StartVm" in r.getMessage() for r in caplog.records)
    assert d.run(m.RebootVm(name="i-1-2-VM")).state is m.VmState.RUNNING
    assert d.run(m.StopVm(name="i-1-2-VM", force=True)).state is m.VmState.STOPPED
    assert d.run(m.QueryVm(name="nope")) == m.ErrorAnswer(code="vm_not_found", message="VM nope does not exist on host h1")
    ready = d.run(m.Ready())
    assert ready.healthy and ready.host.hostname == "h1"
    assert d.run(m.GetHostStats()).stats.memory_total_bytes == 16384 << 20
    d.close()


def test_storage_commands_and_mode_override(tmp_path):
    d, storage = dispatcher(tmp_path, storage_mode="userspace")
    assert d.run(m.AttachPool(pool=POOL)) == m.PoolStatsAnswer(stats=m.PoolStats(capacity_bytes=100, used_bytes=0,
                                                                                 available_bytes=50))
    assert storage.attached == [PoolSpec(uuid="p1", url="nfs://127.0.0.1/export", mode="userspace")]
    kernel_pool = m.PoolSpec(uuid="p2", url="nfs://127.0.0.1/export", mode="kernel")
    d.run(m.AttachPool(pool=kernel_pool))
    assert storage.attached[-1].mode == "kernel"  # an explicit engine choice wins
    answer = d.run(m.CreateVolume(pool=POOL, name="vol-1", size_bytes=1 << 20, format="raw"))
    assert answer.disk == m.DiskSpec(device="vda", source=m.FileSource(path=str(tmp_path / "vol-1.raw")),
                                     format="raw", size_bytes=1 << 20)
    assert d.run(m.DeleteVolume(pool=POOL, name="vol-1")) == m.Ack()
    assert not (tmp_path / "vol-1.raw").exists()
    failure = d.run(m.CheckSecondary(url="nfs://10.9.9.9/sec"))
    assert failure.code == "storage_unreachable" and "10.9.9.9" in failure.message
    d.close()


def test_without_a_storage_driver(tmp_path):
    d = Dispatcher(HandlerContext(SimulatorDriver()), workers=0)
    assert d.run(m.AttachPool(pool=POOL)).code == "unsupported_command"


def test_unexpected_exceptions_become_internal_errors(tmp_path, caplog):
    class Broken(SimulatorDriver):
        def host_stats(self):
            raise ZeroDivisionError("boom")

    d = Dispatcher(HandlerContext(Broken()), workers=0, host_label="g")
    answer = d.run(m.GetHostStats(), seq=3)
    assert answer == m.ErrorAnswer(code="internal_error", message="GetHostStats failed; see the agent log")
    assert any("seq=3 GetHostStats failed unexpectedly" in r.getMessage() for r in caplog.records)


def test_dispatcher_serves_frames_on_its_workers(tmp_path):
    d, _storage = dispatcher(tmp_path)
    answer = asyncio.run(d(Frame(seq=1, message=m.QueryVm(name="x"))))
    assert answer.code == "vm_not_found"
    assert asyncio.run(d(Frame(seq=2, message=m.Ping()))).code == "unsupported_command"
    d.close()
