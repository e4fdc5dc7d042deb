"""Every message exchanged between the engine and its host agents.

Messages are dataclasses registered by class name; the name is the ``type`` of
the frame that carries them (see `stackwright.protocol.framing`).  Three kinds:

* `Request`: expects exactly one answer, either its declared ``answer`` class or
  an `ErrorAnswer`.  ``origin`` says which side may send it.
* `Answer`: the reply to a request, carrying the request's sequence number.
* `Notice`: one-way (`Goodbye`).

The value types below (`HostInfo`, `VmSpec`, `PoolSpec`, ...) are defined once,
here: the agent's hypervisor and storage drivers take and return them
directly (`stackwright.agent.hypervisor.base` and
`stackwright.agent.storage.base` re-export them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

ENGINE = "engine"
AGENT = "agent"

MESSAGE_TYPES: dict[str, type[Message]] = {}


# -- value types -----------------------------------------------------------------


class VmState(enum.StrEnum):
    """Guest power states, spelled as CloudStack spells them."""

    RUNNING = "Running"
    STOPPED = "Stopped"
    STARTING = "Starting"
    STOPPING = "Stopping"
    UNKNOWN = "Unknown"


@dataclass(kw_only=True)
class HostInfo:
    hostname: str
    hypervisor: str
    hypervisor_version: str
    arch: str
    cpu_sockets: int
    cpu_cores: int
    cpu_threads: int
    cpus: int
    cpu_mhz: int
    memory_bytes: int
    private_ip: str | None
    private_mac: str | None
    bridges: list[str] = field(default_factory=list)
    accel: str = "none"


@dataclass(kw_only=True)
class HostStats:
    cpu_utilization: float
    memory_total_bytes: int
    memory_free_bytes: int


@dataclass(frozen=True, kw_only=True)
class FileSource:
    path: str


@dataclass(frozen=True, kw_only=True)
class NfsSource:
    server: str
    export: str
    path: str
    port: int | None = None


@dataclass(kw_only=True)
class BackingSpec:
    """The read-only image a qcow2 volume is an overlay on (a template's copy on the same pool)."""

    source: FileSource | NfsSource
    format: str = "qcow2"


@dataclass(kw_only=True)
class DiskSpec:
    device: str
    source: FileSource | NfsSource
    format: str = "qcow2"
    size_bytes: int = 0
    backing: BackingSpec | None = None


@dataclass(kw_only=True)
class NicSpec:
    mac: str
    bridge: str
    model: str = "virtio"


@dataclass(kw_only=True)
class VmSpec:
    name: str
    uuid: str
    vcpus: int
    cpu_mhz: int
    memory_mb: int
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    vnc_listen: str = "127.0.0.1"
    vnc_password: str | None = None
    # The memory the host reserves for the guest (memory_mb ÷ its cluster's memory
    # over-provisioning ratio; a balloon gives back the rest); None: all of memory_mb.
    min_memory_mb: int | None = None
    # With the offering's limitcpuuse: each vCPU is capped at this fraction of one host core
    # (the offering's MHz ÷ the host's core MHz); None: not capped.
    cpu_cap: float | None = None

    @property
    def reserved_memory_mb(self) -> int:
        """What the host must have free to run the guest."""
        return self.min_memory_mb if self.min_memory_mb is not None else self.memory_mb


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    uuid: str
    url: str
    mode: str = "auto"


@dataclass(frozen=True, kw_only=True)
class TemplateLocation:
    """Where a template lies on secondary storage: ``<store_url>/<directory>/<file_name>``, the
    directory holding ``template.properties`` beside the image once it is complete."""

    store_url: str
    directory: str
    file_name: str
    format: str = "qcow2"


@dataclass(frozen=True, kw_only=True)
class PoolStats:
    capacity_bytes: int
    used_bytes: int
    available_bytes: int


# -- message kinds ---------------------------------------------------------------


@dataclass(kw_only=True)
class Message:
    """Base of every message; subclasses register themselves by class name."""

    secret_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.__name__ not in ("Request", "Answer", "Notice"):
            MESSAGE_TYPES[cls.__name__] = cls

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


@dataclass(kw_only=True)
class Answer(Message):
    """The reply to a `Request`."""


@dataclass(kw_only=True)
class Request(Message):
    """A message that expects one `Answer` (or an `ErrorAnswer`)."""

    origin: ClassVar[str] = ENGINE
    answer: ClassVar[type[Answer]] = Answer


@dataclass(kw_only=True)
class Notice(Message):
    """A one-way message."""


@dataclass(kw_only=True)
class ErrorAnswer(Answer):
    """A request failed; ``code`` is stable, ``message`` is meant for an operator."""

    code: str
    message: str


@dataclass(kw_only=True)
class Ack(Answer):
    """A request succeeded and has nothing to report."""


@dataclass(kw_only=True)
class Goodbye(Notice):
    """The sender is closing the session; ``reason`` says why."""

    reason: str


# -- agent -> engine ---------------------------------------------------------------


@dataclass(kw_only=True)
class CaAnswer(Answer):
    ca_pem: str


@dataclass(kw_only=True)
class GetCa(Request):
    """First step of enrollment: fetch the engine's CA certificate to check its fingerprint."""

    origin: ClassVar[str] = AGENT
    answer: ClassVar[type[Answer]] = CaAnswer


@dataclass(kw_only=True)
class EnrollAnswer(Answer):
    cert_pem: str
    ca_pem: str


@dataclass(kw_only=True)
class Enroll(Request):
    """Trade a one-time token and a CSR for a client certificate issued to ``guid``."""

    origin: ClassVar[str] = AGENT
    answer: ClassVar[type[Answer]] = EnrollAnswer
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)

    token: str
    csr_pem: str
    guid: str
    hostname: str = ""


@dataclass(kw_only=True)
class RegisterAnswer(Answer):
    """The engine accepted the host.

    ``host_id`` is the engine's id for the host (the session's host key);
    ``ping_interval`` (seconds) is how often the agent must ping.
    """

    host_id: str
    host_name: str = ""
    ping_interval: float = 60.0


@dataclass(kw_only=True)
class RegisterRequest(Request):
    """Sent once per connection, before anything else but enrollment."""

    origin: ClassVar[str] = AGENT
    answer: ClassVar[type[Answer]] = RegisterAnswer

    guid: str
    zone: str = ""
    pod: str = ""
    cluster: str = ""
    host: HostInfo
    vms: dict[str, VmState] = field(default_factory=dict)
    agent_version: str = ""
    private_network_device: str = ""
    public_network_device: str = ""
    guest_network_device: str = ""


@dataclass(kw_only=True)
class PingAnswer(Answer):
    pass


@dataclass(kw_only=True)
class Ping(Request):
    """Heartbeat with the state of every guest the hypervisor knows.

    ``vms_reported`` is false when the hypervisor could not be asked; ``vms``
    is then empty and says nothing about the guests.
    """

    origin: ClassVar[str] = AGENT
    answer: ClassVar[type[Answer]] = PingAnswer

    vms: dict[str, VmState] = field(default_factory=dict)
    vms_reported: bool = True
    # Guests (running, in ``vms``) that their disks' error policy paused: their storage failed.
    io_paused: list[str] = field(default_factory=list)


# -- engine -> agent ---------------------------------------------------------------


@dataclass(kw_only=True)
class ReadyAnswer(Answer):
    healthy: bool
    detail: str = ""
    host: HostInfo | None = None


@dataclass(kw_only=True)
class Ready(Request):
    """The engine finished registering the host; the agent reports whether it can serve."""

    answer: ClassVar[type[Answer]] = ReadyAnswer


@dataclass(kw_only=True)
class CheckHealth(Request):
    """Probe the hypervisor (and only the hypervisor)."""

    answer: ClassVar[type[Answer]] = ReadyAnswer


@dataclass(kw_only=True)
class HostStatsAnswer(Answer):
    stats: HostStats


@dataclass(kw_only=True)
class GetHostStats(Request):
    answer: ClassVar[type[Answer]] = HostStatsAnswer


@dataclass(kw_only=True)
class VmStateAnswer(Answer):
    name: str
    state: VmState


@dataclass(kw_only=True)
class StartVm(Request):
    answer: ClassVar[type[Answer]] = VmStateAnswer
    secret_fields: ClassVar[tuple[str, ...]] = ("spec.vnc_password",)

    spec: VmSpec


@dataclass(kw_only=True)
class StopVm(Request):
    answer: ClassVar[type[Answer]] = VmStateAnswer

    name: str
    force: bool = False


@dataclass(kw_only=True)
class RebootVm(Request):
    answer: ClassVar[type[Answer]] = VmStateAnswer

    name: str


@dataclass(kw_only=True)
class QueryVm(Request):
    answer: ClassVar[type[Answer]] = VmStateAnswer

    name: str


@dataclass(kw_only=True)
class VmConsoleAnswer(Answer):
    """Where a running guest's VNC display listens on its host."""

    name: str
    address: str
    port: int


@dataclass(kw_only=True)
class GetVmConsole(Request):
    """The address and port of a running guest's VNC display (the console proxy connects there)."""

    answer: ClassVar[type[Answer]] = VmConsoleAnswer

    name: str


@dataclass(kw_only=True)
class PoolStatsAnswer(Answer):
    stats: PoolStats


@dataclass(kw_only=True)
class AttachPool(Request):
    """Attach a primary storage pool and prove it writable."""

    answer: ClassVar[type[Answer]] = PoolStatsAnswer

    pool: PoolSpec


@dataclass(kw_only=True)
class GetPoolStats(Request):
    answer: ClassVar[type[Answer]] = PoolStatsAnswer

    pool: PoolSpec


@dataclass(kw_only=True)
class IoPausedAnswer(Answer):
    names: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ResumeIoPaused(Request):
    """Resume the guests that storage errors paused (a primary pool answers again)."""

    answer: ClassVar[type[Answer]] = IoPausedAnswer


@dataclass(kw_only=True)
class DetachPool(Request):
    answer: ClassVar[type[Answer]] = Ack

    pool: PoolSpec


@dataclass(kw_only=True)
class CheckSecondary(Request):
    """Check a secondary storage URL for reachability and write access."""

    answer: ClassVar[type[Answer]] = PoolStatsAnswer

    url: str


@dataclass(kw_only=True)
class HeartbeatAnswer(Answer):
    """``age``: seconds between the host's last heartbeat on the pool and now, by the pool's
    own clock (None: the host never wrote one there); ``activity``: one of the volumes
    was written during the window."""

    age: float | None = None
    activity: bool = False


@dataclass(kw_only=True)
class CheckHeartbeat(Request):
    """Read another host's heartbeat on a primary pool and watch the volumes of its guests for
    writes during ``window`` seconds: the evidence the engine's investigator weighs before it
    declares a silent host Dead."""

    answer: ClassVar[type[Answer]] = HeartbeatAnswer

    pool: PoolSpec
    host: str
    volumes: list[str] = field(default_factory=list)
    window: float = 0.0


@dataclass(kw_only=True)
class VolumeAnswer(Answer):
    disk: DiskSpec


@dataclass(kw_only=True)
class CreateVolume(Request):
    """Create a volume; with ``backing`` (a volume of the same pool, such as a template's cached
    copy) a qcow2 overlay on it, grown to ``size_bytes`` when that is larger than the backing image."""

    answer: ClassVar[type[Answer]] = VolumeAnswer

    pool: PoolSpec
    name: str
    size_bytes: int
    format: str = "qcow2"
    backing: str | None = None


@dataclass(kw_only=True)
class CopyTemplate(Request):
    """Copy a template from secondary storage onto a primary pool as volume ``name`` (qcow2),
    the pool's cached copy that root volumes are overlays on."""

    answer: ClassVar[type[Answer]] = VolumeAnswer

    pool: PoolSpec
    template: TemplateLocation
    name: str


@dataclass(kw_only=True)
class DownloadStatus(Answer):
    """Where a download stands. ``state``: absent (nothing under way, nothing complete on the
    store), downloading, complete, or failed (``error`` says why, ``error_code`` is the agent's code
    when storage failed; nothing is left on the store)."""

    state: str
    downloaded_bytes: int = 0
    total_bytes: int = 0
    physical_size: int = 0
    virtual_size: int = 0
    error: str = ""
    error_code: str = ""


@dataclass(kw_only=True)
class DownloadTemplate(Request):
    """Download ``url`` onto secondary storage at ``location`` in the background; the answer is the
    download's status at once. Asking again for a download under way or complete starts nothing."""

    answer: ClassVar[type[Answer]] = DownloadStatus

    location: TemplateLocation
    url: str
    checksum: str = ""
    max_bytes: int = 0
    properties: dict[str, str] = field(default_factory=dict)
    # The URL's host name is resolved again where the download runs and judged as the engine
    # judged it at registration (protocol.sites): the allowed CIDRs, and the management networks
    # (CIDR -> pod name) that are refused.
    allowed_sites: list[str] = field(default_factory=list)
    management_networks: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class QueryDownload(Request):
    answer: ClassVar[type[Answer]] = DownloadStatus

    location: TemplateLocation


@dataclass(kw_only=True)
class DeleteTemplate(Request):
    """Remove a template (image, template.properties and its directory) from secondary storage,
    stopping its download first when one is under way."""

    answer: ClassVar[type[Answer]] = Ack

    location: TemplateLocation


@dataclass(kw_only=True)
class DeleteVolume(Request):
    answer: ClassVar[type[Answer]] = Ack

    pool: PoolSpec
    name: str


@dataclass(kw_only=True)
class PrepareForMigration(Request):
    """The destination of a live migration checks it can take the guest (its bridges, its
    memory, no other copy of it) and clears a stale definition of it; nothing is started."""

    answer: ClassVar[type[Answer]] = Ack
    secret_fields: ClassVar[tuple[str, ...]] = ("spec.vnc_password",)

    spec: VmSpec


@dataclass(kw_only=True)
class MigrateVm(Request):
    """Live-migrate a running guest to another host; the answer is the guest's state on the
    source afterwards (Stopped: it left). A second request for a guest whose migration is
    under way waits for that one instead of starting another.

    ``address`` is the destination's address on the migration network (its libvirtd listens
    there, ``qemu+tcp://<address>/system``); ``guid`` names the destination host, which is how
    simulated hosts find each other; ``vnc_listen`` is the console address on the destination.
    """

    answer: ClassVar[type[Answer]] = VmStateAnswer

    name: str
    address: str
    guid: str
    vnc_listen: str = "127.0.0.1"
    timeout: float = 300.0


@dataclass(kw_only=True)
class VmDisksAnswer(Answer):
    """The disk devices (vda, vdb, ...) a guest has now."""

    name: str
    devices: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class AttachDisk(Request):
    """Hot-plug a volume into a running guest as a virtio disk (``disk.device``); a disk already
    there under that device is left as it is."""

    answer: ClassVar[type[Answer]] = VmDisksAnswer

    name: str
    disk: DiskSpec


@dataclass(kw_only=True)
class DetachDisk(Request):
    """Hot-unplug disk ``device`` from a running guest; a device the guest no longer has is done."""

    answer: ClassVar[type[Answer]] = VmDisksAnswer

    name: str
    device: str
    timeout: float = 30.0


@dataclass(kw_only=True)
class QueryDisks(Request):
    answer: ClassVar[type[Answer]] = VmDisksAnswer

    name: str


@dataclass(kw_only=True)
class VolumeSizeAnswer(Answer):
    size_bytes: int


@dataclass(kw_only=True)
class ResizeVolume(Request):
    """Grow (or, with ``shrink``, shrink) a volume to ``size_bytes``; with ``vm`` and ``device`` the
    volume is a disk of that running guest, resized live so the guest sees its new size."""

    answer: ClassVar[type[Answer]] = VolumeSizeAnswer

    pool: PoolSpec
    name: str
    size_bytes: int
    shrink: bool = False
    vm: str | None = None
    device: str | None = None


@dataclass(kw_only=True)
class QueryVolume(Request):
    """The virtual size of a volume on a pool."""

    answer: ClassVar[type[Answer]] = VolumeSizeAnswer

    pool: PoolSpec
    name: str
