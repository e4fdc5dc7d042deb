"""The libvirt hypervisor driver: `HypervisorDriver` on top of `Host` and `Guest`.

Policy lives here: `build_domain` decides the domain type (``kvm`` when
/dev/kvm works, ``qemu`` for TCG otherwise, ``test`` on libvirt's test
driver), the CPU mode and the devices, and fills the XML objects with it.

Guests are persistent only while they run: ``start`` defines and boots,
``stop`` powers off and undefines, because the engine holds the definitive
definition and hands it over again on the next start.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time

from stackwright.agent.errors import HypervisorError, InsufficientCapacity, InvalidSpec
from stackwright.agent.hypervisor.base import (
    BackingSpec,
    DiskSpec,
    FileSource,
    HostInfo,
    HostStats,
    HypervisorDriver,
    NfsSource,
    VmSpec,
    VmState,
    check_sizing,
    nfs_path,
)
from stackwright.agent.hypervisor.libvirt import xml
from stackwright.agent.hypervisor.libvirt.guest import Guest
from stackwright.agent.hypervisor.libvirt.host import Host, list_bridges, nic_address

log = logging.getLogger(__name__)

DISK_DEVICE = re.compile(r"(vd|sd|hd)[a-z]{1,2}")
MAC_ADDRESS = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
DISK_FORMATS = ("qcow2", "raw")
DOMAIN_TYPES = {"kvm": "kvm", "tcg": "qemu", "none": "test"}
NFS_PORT = 2049


def validate_spec(spec: VmSpec) -> None:
    """Reject a spec libvirt would refuse, naming the field and the fix."""
    if not spec.name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", spec.name):
        raise InvalidSpec(f"VM name {spec.name!r} must be 1-80 letters, digits, '.', '_' or '-'")
    for label, value in (("vcpus", spec.vcpus), ("memory_mb", spec.memory_mb), ("cpu_mhz", spec.cpu_mhz)):
        if not isinstance(value, int) or value <= 0:
            raise InvalidSpec(f"VM {spec.name}: {label} must be a positive integer, got {value!r}")
    check_sizing(spec)
    devices = [disk.device for disk in spec.disks]
    for disk in spec.disks:
        if not DISK_DEVICE.fullmatch(disk.device):
            raise InvalidSpec(f"VM {spec.name}: disk device {disk.device!r} must look like vda, vdb, ...")
        if disk.format not in DISK_FORMATS:
            raise InvalidSpec(f"VM {spec.name}: disk {disk.device} format {disk.format!r} must be qcow2 or raw")
        if isinstance(disk.source, NfsSource) and disk.source.port not in (None, NFS_PORT):
            raise InvalidSpec(
                f"VM {spec.name}: disk {disk.device} is on NFS port {disk.source.port}; QEMU's NFS "
                "client only uses the standard ports, so serve the export there or mount it on the host"
            )
    if len(set(devices)) != len(devices):
        raise InvalidSpec(f"VM {spec.name}: disk devices {devices} are not unique")
    for nic in spec.nics:
        if not MAC_ADDRESS.fullmatch(nic.mac or ""):
            raise InvalidSpec(f"VM {spec.name}: NIC MAC {nic.mac!r} must look like 02:00:00:aa:bb:cc")
        if not nic.bridge:
            raise InvalidSpec(f"VM {spec.name}: NIC {nic.mac} names no bridge")


# A disk whose storage fails (an NFS pool that stops answering) pauses its guest, as CloudStack's
# KVM guests do, instead of handing I/O errors to the guest OS (which may remount read-only or
# crash); the agent resumes it once the pool answers again (ResumeIoPaused).
DISK_ERROR_POLICY = "stop"


def build_disk(disk: DiskSpec | BackingSpec, nfs_identity: tuple[str, str] | None, device: str = "") -> xml.Disk:
    """The ``<disk>`` of a guest disk; a qcow2 overlay names its backing image (``<backingStore>``),
    so libvirt need not probe the chain over NFS."""
    device = device or getattr(disk, "device", "")
    backing = getattr(disk, "backing", None)
    below = build_disk(backing, nfs_identity, device) if backing is not None else None
    # The policies belong to the guest's disk; a backing store has no <driver> of its own.
    policies = {} if isinstance(disk, BackingSpec) else {
        "error_policy": DISK_ERROR_POLICY, "rerror_policy": DISK_ERROR_POLICY}
    if isinstance(disk.source, FileSource):
        return xml.Disk(target_dev=device, driver_type=disk.format, source_file=disk.source.path, backing=below,
                        **policies)
    if isinstance(disk.source, NfsSource):
        user, group = nfs_identity or (None, None)
        # libvirt rejects a port on NFS hosts; the portmapper finds the services.
        return xml.Disk(
            target_dev=device,
            driver_type=disk.format,
            source_protocol="nfs",
            source_name=nfs_path(disk.source),
            hosts=[xml.DiskHost(name=disk.source.server)],
            identity_user=user,
            identity_group=group,
            backing=below,
            **policies,
        )
    raise InvalidSpec(f"disk {device} has an unsupported source {type(disk.source).__name__}")


CPU_PERIOD_US = 100_000    # libvirt's default CFS period
MIN_CPU_QUOTA_US = 1000    # the smallest quota libvirt accepts


def cpu_cap(fraction: float | None) -> dict[str, int]:
    """`<cputune>` period and quota that let each vCPU run `fraction` of a host core; none
    when the guest is not capped."""
    if fraction is None:
        return {}
    return {"period": CPU_PERIOD_US, "quota": max(MIN_CPU_QUOTA_US, round(CPU_PERIOD_US * fraction))}


def build_domain(
    spec: VmSpec,
    accel: str,
    arch: str,
    nfs_identity: tuple[str, str] | None = None,
    cpu_mode: str | None = None,
    console_log_dir: str | None = None,
) -> xml.Domain:
    """Turn a `VmSpec` into domain XML objects for this host's acceleration.

    ``cpu_mode`` is agent.properties' ``guest.cpu.mode`` (host-model,
    host-passthrough); without it libvirt's default CPU model is used, which
    also works under nested virtualisation where passthrough may not.
    With ``console_log_dir`` the serial console is also logged to
    ``<console_log_dir>/<name>-console.log``.
    """
    domain_type = DOMAIN_TYPES[accel]
    return xml.Domain(
        name=spec.name,
        uuid=spec.uuid,
        type=domain_type,
        # The offering's memory is the most the guest gets; an over-provisioned cluster's guest
        # starts at memory ÷ ratio and the balloon gives the rest back when the host needs it.
        memory=xml.Memory(spec.memory_mb * 1024),
        current_memory=xml.Memory(spec.reserved_memory_mb * 1024, "currentMemory"),
        vcpus=spec.vcpus,
        # CloudStack weighs guests by the CPU speed their offering promises (and with
        # limitcpuuse caps each vCPU at it).
        cputune=xml.CpuTune(shares=spec.vcpus * spec.cpu_mhz, **cpu_cap(spec.cpu_cap)),
        memballoon=xml.MemBalloon() if domain_type != "test" else None,
        cpu=xml.Cpu(mode=cpu_mode) if cpu_mode and accel == "kvm" else None,
        os=xml.Os(type="hvm", arch=arch, boot=["hd"]),
        features=["acpi", "apic"] if domain_type != "test" else [],
        disks=[build_disk(disk, nfs_identity) for disk in spec.disks],
        interfaces=[xml.Interface(mac=nic.mac.lower(), bridge=nic.bridge, model=nic.model) for nic in spec.nics],
        serials=[xml.CharDevice(element_name="serial", target_port=0, log_file=(
            f"{console_log_dir}/{spec.name}-console.log" if console_log_dir else None))],
        consoles=[xml.CharDevice(element_name="console", target_type="serial", target_port=0)],
        graphics=[xml.Graphics(listen=spec.vnc_listen, password=spec.vnc_password)],
    )


# Where libvirt keeps its QEMU logs; each guest's serial console is logged beside them.
CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"


class LibvirtDriver(HypervisorDriver):
    """KVM (or TCG) guests through libvirt."""

    kind = "libvirt"

    def __init__(
        self,
        uri: str = "qemu:///system",
        private_device: str | None = None,
        stop_grace: float = 30.0,
        nfs_identity: tuple[str, str] | None = ("root", "root"),
        accel: str | None = None,
        cpu_mode: str | None = None,
        console_log_dir: str | None = CONSOLE_LOG_DIR,
    ) -> None:
        if accel is not None and accel not in DOMAIN_TYPES:
            raise InvalidSpec(f"acceleration {accel!r} is not one of: {', '.join(DOMAIN_TYPES)}")
        self.host = Host(uri)
        self.private_device = private_device
        self.stop_grace = stop_grace
        # Volumes are created by the agent as root with mode 0600, and QEMU
        # runs as another user: it must present root's identity to the server.
        self.nfs_identity = nfs_identity
        self._accel = accel
        self.cpu_mode = cpu_mode
        self.console_log_dir = console_log_dir
        self._cpu_sample: tuple[int, int] | None = None
        self._lock = threading.Lock()

    # -- host --------------------------------------------------------------

    @property
    def accel(self) -> str:
        if self._accel is None:
            if self.host.driver_type.upper() == "TEST":
                self._accel = "none"
            elif self.host.kvm_available(self.host.cpu_topology().arch):
                self._accel = "kvm"
            else:
                self._accel = "tcg"
            log.info("libvirt at %s: guests use %s", self.host.uri, self._accel)
        return self._accel

    def host_info(self) -> HostInfo:
        topology = self.host.cpu_topology()
        total, _free = self.host.memory()
        nic = nic_address(self.private_device)
        return HostInfo(
            hostname=self.host.hostname(),
            hypervisor="KVM",
            hypervisor_version=self.host.hypervisor_version(),
            arch=topology.arch,
            cpu_sockets=topology.sockets,
            cpu_cores=topology.cores,
            cpu_threads=topology.threads,
            cpus=topology.cpus,
            cpu_mhz=topology.mhz,
            memory_bytes=total,
            private_ip=nic.ip,
            private_mac=nic.mac,
            bridges=list_bridges(),
            accel=self.accel,
        )

    def host_stats(self) -> HostStats:
        """CPU use since the previous call (since boot on the first), and memory now."""
        busy, total = self.host.cpu_times()
        with self._lock:
            previous, self._cpu_sample = self._cpu_sample, (busy, total)
        if previous is not None and total > previous[1]:
            busy, total = busy - previous[0], total - previous[1]
        utilization = min(100.0, max(0.0, 100.0 * busy / total)) if total > 0 else 0.0
        memory_total, memory_free = self.host.memory()
        return HostStats(cpu_utilization=round(utilization, 2), memory_total_bytes=memory_total,
                         memory_free_bytes=memory_free)

    # -- guests ------------------------------------------------------------

    def domain_xml(self, spec: VmSpec) -> str:
        validate_spec(spec)
        return build_domain(spec, self.accel, self.host.cpu_topology().arch, self.nfs_identity,
                            self.cpu_mode, self._console_log_dir()).to_xml()

    def _console_log_dir(self) -> str | None:
        """The directory guests' serial consoles are logged to, made when missing (a host whose
        libvirtd has never run a guest has none); None, and no log, when it cannot be made."""
        if not self.console_log_dir:
            return None
        try:
            os.makedirs(self.console_log_dir, exist_ok=True)
        except OSError as e:
            log.warning("guests' consoles are not logged: cannot make %s: %s", self.console_log_dir, e)
            return None
        return self.console_log_dir

    def start(self, spec: VmSpec) -> VmState:
        domain_xml = self.domain_xml(spec)
        existing = self.host.find_domain(spec.name)
        if existing is not None:
            leftover = Guest(self.host, existing)
            if leftover.is_active:
                log.info("domain %s is already running", spec.name)
                return VmState.RUNNING
            # A stale definition (an earlier stop that did not finish) yields to the engine's.
            leftover.undefine()
        guest = Guest(self.host, self.host.define(domain_xml))
        try:
            guest.launch()
        except Exception:
            # Leave nothing half-made behind: a guest that did not boot is not defined.
            guest.undefine()
            raise
        return guest.state

    def stop(self, name: str, force: bool = False) -> VmState:
        domain = self.host.find_domain(name)
        if domain is None:
            return VmState.STOPPED
        guest = Guest(self.host, domain)
        if guest.is_active:
            if force or not guest.shutdown(self.stop_grace):
                if not force:
                    log.warning("domain %s ignored shutdown for %ss; powering it off", name, self.stop_grace)
                guest.poweroff()
        guest.undefine()
        return VmState.STOPPED

    def reboot(self, name: str) -> None:
        guest = Guest(self.host, self.host.get_domain(name))
        if not guest.is_active:
            raise HypervisorError(f"cannot reboot {name}: it is not running; start it instead")
        guest.reboot()

    def query(self, name: str) -> VmState:
        return Guest(self.host, self.host.get_domain(name)).state

    def io_paused(self) -> list[str]:
        return sorted(g.name for g in (Guest(self.host, d) for d in self.host.list_domains())
                      if g.paused_for_io_error())

    def resume_io_paused(self) -> list[str]:
        resumed = []
        for name in self.io_paused():
            domain = self.host.find_domain(name)
            if domain is None:
                continue
            Guest(self.host, domain).resume()
            log.warning("resumed %s, paused for an I/O error of its storage", name)
            resumed.append(name)
        return resumed

    def console(self, name: str) -> tuple[str, int]:
        guest = Guest(self.host, self.host.get_domain(name))
        if not guest.is_active:
            raise HypervisorError(f"{name} has no console: it is not running")
        # The live definition carries the port libvirt chose (autoport) while the guest runs.
        address, port = xml.vnc_display(guest.xml())
        if port > 0:
            return address, port
        raise HypervisorError(f"{name} has no VNC display")

    # -- disks of running guests -------------------------------------------

    def _running(self, name: str) -> Guest:
        guest = Guest(self.host, self.host.get_domain(name))
        if not guest.is_active:
            raise HypervisorError(f"{name} is not running; its disks change with its definition at the next start")
        return guest

    def disks(self, name: str) -> list[str]:
        return xml.disk_devices(self._running(name).xml())

    def attach_disk(self, name: str, disk: DiskSpec) -> None:
        if not DISK_DEVICE.fullmatch(disk.device) or disk.format not in DISK_FORMATS:
            raise InvalidSpec(f"disk {disk.device!r} ({disk.format}) must look like vdb and be qcow2 or raw")
        guest = self._running(name)
        if disk.device in xml.disk_devices(guest.xml()):
            return
        guest.attach_device(build_disk(disk, self.nfs_identity).to_xml())
        log.info("attached disk %s to %s", disk.device, name)

    def detach_disk(self, name: str, device: str, timeout: float) -> None:
        guest = self._running(name)
        current = guest.xml()
        if device not in xml.disk_devices(current):
            return
        guest.detach_device(xml.disk_element(current, device))
        # The guest's OS releases the device when it acknowledges the unplug.
        deadline = time.monotonic() + timeout
        while device in xml.disk_devices(guest.xml()):
            if time.monotonic() > deadline:
                raise HypervisorError(f"{name} did not release disk {device} within {timeout:.0f}s; the guest's "
                                      "operating system must acknowledge the unplug (is it running and "
                                      "hot-plug capable?)")
            time.sleep(0.2)
        log.info("detached disk %s from %s", device, name)

    def resize_disk(self, name: str, device: str, size_bytes: int) -> None:
        self._running(name).block_resize(device, size_bytes)
        log.info("resized disk %s of %s to %s bytes", device, name, size_bytes)

    def list_vms(self) -> dict[str, VmState]:
        return {guest.name: guest.state for guest in (Guest(self.host, d) for d in self.host.list_domains())}

    # -- live migration ----------------------------------------------------

    def prepare_migration(self, spec: VmSpec) -> None:
        self.domain_xml(spec)       # a spec this host would refuse fails here, not halfway
        missing = sorted({nic.bridge for nic in spec.nics} - set(list_bridges()))
        if missing:
            raise HypervisorError(f"cannot receive {spec.name}: this host has no bridge {', '.join(missing)}")
        _total, free = self.host.memory()
        if spec.memory_mb << 20 > free:
            raise InsufficientCapacity(f"cannot receive {spec.name}: it needs {spec.memory_mb} MiB and this host "
                                       f"has {free >> 20} MiB free")
        existing = self.host.find_domain(spec.name)
        if existing is not None:
            leftover = Guest(self.host, existing)
            if leftover.is_active:
                raise HypervisorError(f"cannot receive {spec.name}: a copy of it runs on this host already")
            leftover.undefine()

    def migrate(self, name: str, address: str, guid: str, vnc_listen: str, timeout: float) -> VmState:
        guest = Guest(self.host, self.host.get_domain(name))
        if not guest.is_active:
            raise HypervisorError(f"cannot migrate {name}: it is not running on this host")
        # A migration that takes longer than the engine waits is cancelled: the guest stays here.
        watchdog = threading.Timer(timeout, guest.abort_job)
        watchdog.daemon = True
        watchdog.start()
        try:
            guest.migrate(address, vnc_listen)
        finally:
            watchdog.cancel()
        domain = self.host.find_domain(name)
        return Guest(self.host, domain).state if domain is not None else VmState.STOPPED

    def close(self) -> None:
        self.host.close()
