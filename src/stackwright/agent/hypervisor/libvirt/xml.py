"""Libvirt domain XML as typed objects: one class per element.

Each class renders itself with ``to_element()``/``to_xml()`` and reads itself
back with ``parse()``.  These classes hold no policy: which CPU mode, which
domain type or which disk a guest gets is decided by the driver, which fills
these objects.  Only the attributes Stackwright uses are modelled.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import ClassVar


def _render(element: ET.Element) -> str:
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode")


def _as_element(source: str | ET.Element) -> ET.Element:
    return ET.fromstring(source) if isinstance(source, str) else source


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _child_attr(element: ET.Element | None, child: str, name: str, default=None):
    """Attribute ``name`` of the first ``child`` of ``element``, or ``default``."""
    found = element.find(child) if element is not None else None
    return found.get(name, default) if found is not None else default


class XmlElement:
    """Shared rendering for the element classes."""

    tag: ClassVar[str]
    # Element names one class reads, where it stands for several (memory, currentMemory).
    tags: ClassVar[tuple[str, ...]] = ()

    def to_element(self) -> ET.Element:
        raise NotImplementedError

    def to_xml(self) -> str:
        return _render(self.to_element())

    @classmethod
    def parse(cls, source: str | ET.Element):
        element = _as_element(source)
        accepted = cls.tags or (cls.tag,)
        if element.tag not in accepted:
            names = " or ".join(f"<{name}>" for name in accepted)
            raise ValueError(f"expected {names}, got <{element.tag}>")
        return cls._from_element(element)

    @classmethod
    def _from_element(cls, element: ET.Element):
        raise NotImplementedError


@dataclass
class Memory(XmlElement):
    """``<memory>`` or ``<currentMemory>``, always rendered in KiB."""

    tag: ClassVar[str] = "memory"
    tags: ClassVar[tuple[str, ...]] = ("memory", "currentMemory")
    kib: int
    element_name: str = "memory"

    def to_element(self) -> ET.Element:
        element = ET.Element(self.element_name, unit="KiB")
        element.text = str(self.kib)
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> Memory:
        factors = {"b": 1, "bytes": 1, "KB": 1000, "k": 1024, "KiB": 1024, "MB": 10**6,
                   "M": 1024**2, "MiB": 1024**2, "GB": 10**9, "G": 1024**3, "GiB": 1024**3}
        unit = element.get("unit", "KiB")
        if unit not in factors:
            raise ValueError(f"unknown memory unit {unit!r}")
        return cls(kib=int(element.text or 0) * factors[unit] // 1024, element_name=element.tag)


@dataclass
class CpuTopology(XmlElement):
    tag: ClassVar[str] = "topology"
    sockets: int
    cores: int
    threads: int

    def to_element(self) -> ET.Element:
        return ET.Element(self.tag, sockets=str(self.sockets), cores=str(self.cores), threads=str(self.threads))

    @classmethod
    def _from_element(cls, element: ET.Element) -> CpuTopology:
        return cls(sockets=int(element.get("sockets", 1)), cores=int(element.get("cores", 1)),
                   threads=int(element.get("threads", 1)))


@dataclass
class Cpu(XmlElement):
    """``<cpu mode=...>``: ``host-passthrough``, ``host-model`` or ``custom`` with a model."""

    tag: ClassVar[str] = "cpu"
    mode: str | None = None
    model: str | None = None
    check: str | None = None
    topology: CpuTopology | None = None

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag)
        if self.mode:
            element.set("mode", self.mode)
        if self.check:
            element.set("check", self.check)
        if self.model:
            ET.SubElement(element, "model", fallback="allow").text = self.model
        if self.topology:
            element.append(self.topology.to_element())
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> Cpu:
        topology = element.find("topology")
        return cls(
            mode=element.get("mode"),
            model=element.findtext("model"),
            check=element.get("check"),
            topology=CpuTopology.parse(topology) if topology is not None else None,
        )


@dataclass
class CpuTune(XmlElement):
    """``<cputune>``: relative CPU weight of the guest (``<shares>``) and, when capped, the
    microseconds each vCPU may run (``<quota>``) in every ``<period>``."""

    tag: ClassVar[str] = "cputune"
    shares: int
    period: int | None = None
    quota: int | None = None

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag)
        ET.SubElement(element, "shares").text = str(self.shares)
        if self.period is not None:
            ET.SubElement(element, "period").text = str(self.period)
        if self.quota is not None:
            ET.SubElement(element, "quota").text = str(self.quota)
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> CpuTune:
        return cls(shares=int(element.findtext("shares", "0")), period=_int(element.findtext("period")),
                   quota=_int(element.findtext("quota")))


@dataclass
class MemBalloon(XmlElement):
    """``<memballoon>``: the device through which the host takes back memory above
    ``<currentMemory>``."""

    tag: ClassVar[str] = "memballoon"
    model: str = "virtio"

    def to_element(self) -> ET.Element:
        return ET.Element(self.tag, model=self.model)

    @classmethod
    def _from_element(cls, element: ET.Element) -> MemBalloon:
        return cls(model=element.get("model", "virtio"))


@dataclass
class Os(XmlElement):
    tag: ClassVar[str] = "os"
    type: str = "hvm"
    arch: str | None = None
    machine: str | None = None
    boot: list[str] = field(default_factory=list)

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag)
        os_type = ET.SubElement(element, "type")
        if self.arch:
            os_type.set("arch", self.arch)
        if self.machine:
            os_type.set("machine", self.machine)
        os_type.text = self.type
        for device in self.boot:
            ET.SubElement(element, "boot", dev=device)
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> Os:
        return cls(
            type=element.findtext("type") or "hvm",
            arch=_child_attr(element, "type", "arch"),
            machine=_child_attr(element, "type", "machine"),
            boot=[boot.get("dev", "") for boot in element.findall("boot")],
        )


@dataclass
class DiskHost(XmlElement):
    tag: ClassVar[str] = "host"
    name: str
    port: int | None = None

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag, name=self.name)
        if self.port is not None:
            element.set("port", str(self.port))
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> DiskHost:
        return cls(name=element.get("name", ""), port=_int(element.get("port")))


@dataclass
class Disk(XmlElement):
    """``<disk>`` backed by a local file or by a network protocol (``nfs``)."""

    tag: ClassVar[str] = "disk"
    target_dev: str
    driver_type: str = "qcow2"
    target_bus: str = "virtio"
    device: str = "disk"
    source_file: str | None = None
    source_protocol: str | None = None
    source_name: str | None = None
    hosts: list[DiskHost] = field(default_factory=list)
    identity_user: str | None = None
    identity_group: str | None = None
    cache: str | None = None
    readonly: bool = False
    # What QEMU does on a write (error_policy) or read (rerror_policy) error: "stop" pauses
    # the guest instead of passing the error to its OS.
    error_policy: str | None = None
    rerror_policy: str | None = None
    # The image a qcow2 overlay reads through to (its own backing chain ends there).
    backing: Disk | None = None

    @property
    def type(self) -> str:
        return "network" if self.source_protocol else "file"

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag, type=self.type, device=self.device)
        driver = ET.SubElement(element, "driver", name="qemu", type=self.driver_type)
        if self.cache:
            driver.set("cache", self.cache)
        if self.error_policy:
            driver.set("error_policy", self.error_policy)
        if self.rerror_policy:
            driver.set("rerror_policy", self.rerror_policy)
        self._add_source(element)
        if self.backing is not None:
            store = ET.SubElement(element, "backingStore", type=self.backing.type)
            ET.SubElement(store, "format", type=self.backing.driver_type)
            self.backing._add_source(store)
            ET.SubElement(store, "backingStore")
        ET.SubElement(element, "target", dev=self.target_dev, bus=self.target_bus)
        if self.readonly:
            ET.SubElement(element, "readonly")
        return element

    def _add_source(self, element: ET.Element) -> None:
        if self.source_protocol:
            source = ET.SubElement(element, "source", protocol=self.source_protocol, name=self.source_name or "")
            for host in self.hosts:
                source.append(host.to_element())
            if self.identity_user or self.identity_group:
                identity = ET.SubElement(source, "identity")
                if self.identity_user:
                    identity.set("user", self.identity_user)
                if self.identity_group:
                    identity.set("group", self.identity_group)
        elif self.source_file:
            ET.SubElement(element, "source", file=self.source_file)

    @classmethod
    def _from_element(cls, element: ET.Element) -> Disk:
        source = element.find("source")
        store = element.find("backingStore")
        backing = None
        if store is not None and store.find("source") is not None:
            backing = cls._from_element(store)
            backing.driver_type = _child_attr(store, "format", "type", "raw")
        return cls(
            backing=backing,
            target_dev=_child_attr(element, "target", "dev", ""),
            target_bus=_child_attr(element, "target", "bus", "virtio"),
            driver_type=_child_attr(element, "driver", "type", "raw"),
            cache=_child_attr(element, "driver", "cache"),
            error_policy=_child_attr(element, "driver", "error_policy"),
            rerror_policy=_child_attr(element, "driver", "rerror_policy"),
            device=element.get("device", "disk"),
            source_file=source.get("file") if source is not None else None,
            source_protocol=source.get("protocol") if source is not None else None,
            source_name=source.get("name") if source is not None else None,
            hosts=[DiskHost.parse(host) for host in source.findall("host")] if source is not None else [],
            identity_user=_child_attr(source, "identity", "user"),
            identity_group=_child_attr(source, "identity", "group"),
            readonly=element.find("readonly") is not None,
        )


@dataclass
class Interface(XmlElement):
    """``<interface type='bridge'>`` with a MAC and a device model."""

    tag: ClassVar[str] = "interface"
    mac: str
    bridge: str
    model: str = "virtio"

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag, type="bridge")
        ET.SubElement(element, "mac", address=self.mac)
        ET.SubElement(element, "source", bridge=self.bridge)
        ET.SubElement(element, "model", type=self.model)
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> Interface:
        return cls(
            mac=_child_attr(element, "mac", "address", ""),
            bridge=_child_attr(element, "source", "bridge", ""),
            model=_child_attr(element, "model", "type", "virtio"),
        )


@dataclass
class Graphics(XmlElement):
    """``<graphics type='vnc'>`` on an automatically chosen port."""

    tag: ClassVar[str] = "graphics"
    listen: str
    type: str = "vnc"
    port: int | None = None
    password: str | None = None

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag, type=self.type)
        if self.port is None or self.port < 0:
            element.set("autoport", "yes")
        else:
            element.set("port", str(self.port))
            element.set("autoport", "no")
        element.set("listen", self.listen)
        if self.password:
            element.set("passwd", self.password)
        ET.SubElement(element, "listen", type="address", address=self.listen)
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> Graphics:
        port = _int(element.get("port"))
        return cls(
            type=element.get("type", "vnc"),
            listen=element.get("listen") or _child_attr(element, "listen", "address", ""),
            port=port if element.get("autoport") != "yes" else None,
            password=element.get("passwd"),
        )


def vnc_display(domain_xml: str) -> tuple[str, int]:
    """A running domain's VNC address and port (the port libvirt chose under autoport; -1 when
    the domain has no VNC display)."""
    for element in ET.fromstring(domain_xml).iter("graphics"):
        if element.get("type") == "vnc":
            listen = element.get("listen") or _child_attr(element, "listen", "address", "")
            return listen, _int(element.get("port")) or -1
    return "", -1


def disk_devices(domain_xml: str) -> list[str]:
    """The target devices (vda, vdb, ...) of a domain's disks, in their order."""
    return [target.get("dev", "") for disk in ET.fromstring(domain_xml).iter("disk")
            if (target := disk.find("target")) is not None]


def disk_element(domain_xml: str, device: str) -> str:
    """The ``<disk>`` of target ``device`` as the domain has it (what a detach names)."""
    for disk in ET.fromstring(domain_xml).iter("disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == device:
            return ET.tostring(disk, encoding="unicode")
    raise KeyError(device)


@dataclass
class CharDevice(XmlElement):
    """``<serial type='pty'>`` or ``<console type='pty'>``."""

    tag: ClassVar[str] = "serial"
    tags: ClassVar[tuple[str, ...]] = ("serial", "console")
    element_name: str = "serial"
    type: str = "pty"
    target_port: int = 0
    target_type: str | None = None
    # Everything the guest writes to the device is also kept in this file (virtlogd).
    log_file: str | None = None

    def to_element(self) -> ET.Element:
        element = ET.Element(self.element_name, type=self.type)
        if self.log_file:
            ET.SubElement(element, "log", file=self.log_file, append="off")
        target = ET.SubElement(element, "target")
        if self.target_type:
            target.set("type", self.target_type)
        target.set("port", str(self.target_port))
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> CharDevice:
        return cls(
            element_name=element.tag,
            type=element.get("type", "pty"),
            target_port=int(_child_attr(element, "target", "port", 0)),
            target_type=_child_attr(element, "target", "type"),
            log_file=_child_attr(element, "log", "file"),
        )


@dataclass
class Domain(XmlElement):
    """``<domain>``: the whole guest definition."""

    tag: ClassVar[str] = "domain"
    name: str
    uuid: str
    type: str = "kvm"
    memory: Memory | None = None
    current_memory: Memory | None = None
    vcpus: int = 1
    cpu: Cpu | None = None
    cputune: CpuTune | None = None
    os: Os = field(default_factory=Os)
    features: list[str] = field(default_factory=list)
    clock_offset: str = "utc"
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    disks: list[Disk] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    graphics: list[Graphics] = field(default_factory=list)
    serials: list[CharDevice] = field(default_factory=list)
    consoles: list[CharDevice] = field(default_factory=list)
    memballoon: MemBalloon | None = None
    description: str | None = None

    def to_element(self) -> ET.Element:
        element = ET.Element(self.tag, type=self.type)
        ET.SubElement(element, "name").text = self.name
        ET.SubElement(element, "uuid").text = self.uuid
        if self.description:
            ET.SubElement(element, "description").text = self.description
        if self.memory:
            element.append(Memory(self.memory.kib, "memory").to_element())
        if self.current_memory:
            element.append(Memory(self.current_memory.kib, "currentMemory").to_element())
        ET.SubElement(element, "vcpu").text = str(self.vcpus)
        if self.cputune:
            element.append(self.cputune.to_element())
        element.append(self.os.to_element())
        if self.features:
            features = ET.SubElement(element, "features")
            for name in self.features:
                ET.SubElement(features, name)
        if self.cpu:
            element.append(self.cpu.to_element())
        ET.SubElement(element, "clock", offset=self.clock_offset)
        ET.SubElement(element, "on_poweroff").text = self.on_poweroff
        ET.SubElement(element, "on_reboot").text = self.on_reboot
        ET.SubElement(element, "on_crash").text = self.on_crash
        devices = ET.SubElement(element, "devices")
        for device in (*self.disks, *self.interfaces, *self.serials, *self.consoles, *self.graphics):
            devices.append(device.to_element())
        if self.memballoon:
            devices.append(self.memballoon.to_element())
        return element

    @classmethod
    def _from_element(cls, element: ET.Element) -> Domain:
        devices = element.find("devices")
        if devices is None:
            devices = ET.Element("devices")
        memory = element.find("memory")
        current = element.find("currentMemory")
        cpu = element.find("cpu")
        cputune = element.find("cputune")
        os_element = element.find("os")
        features = element.find("features")
        clock = element.find("clock")
        balloon = devices.find("memballoon")
        return cls(
            name=element.findtext("name", ""),
            uuid=element.findtext("uuid", ""),
            type=element.get("type", "kvm"),
            description=element.findtext("description"),
            memory=Memory.parse(memory) if memory is not None else None,
            current_memory=Memory.parse(current) if current is not None else None,
            vcpus=int(element.findtext("vcpu", "1")),
            cpu=Cpu.parse(cpu) if cpu is not None else None,
            cputune=CpuTune.parse(cputune) if cputune is not None and cputune.find("shares") is not None else None,
            os=Os.parse(os_element) if os_element is not None else Os(),
            features=[feature.tag for feature in features] if features is not None else [],
            clock_offset=clock.get("offset", "utc") if clock is not None else "utc",
            on_poweroff=element.findtext("on_poweroff", "destroy"),
            on_reboot=element.findtext("on_reboot", "restart"),
            on_crash=element.findtext("on_crash", "destroy"),
            disks=[Disk.parse(disk) for disk in devices.findall("disk")],
            interfaces=[Interface.parse(nic) for nic in devices.findall("interface") if nic.get("type") == "bridge"],
            graphics=[Graphics.parse(graphics) for graphics in devices.findall("graphics")],
            serials=[CharDevice.parse(serial) for serial in devices.findall("serial")],
            consoles=[CharDevice.parse(console) for console in devices.findall("console")],
            memballoon=MemBalloon.parse(balloon) if balloon is not None else None,
        )
