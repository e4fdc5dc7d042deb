"""One libvirt domain, driven through intent-named methods."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET

import libvirt

from stackwright.agent.hypervisor.base import VmState
from stackwright.agent.hypervisor.libvirt.host import Host

log = logging.getLogger(__name__)

# A live migration: the guest keeps running; libvirt on the source drives it (peer to peer),
# the destination keeps the definition and the source forgets it.
MIGRATE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)

# A hot-plugged device goes into the running guest and into its (transient) definition alike.
LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG

# Libvirt domain states in CloudStack's words.
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: VmState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VmState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: VmState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmState.STOPPING,
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: VmState.STOPPED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmState.RUNNING,
}
POLL_INTERVAL = 0.2


class Guest:
    """A libvirt domain plus the host whose connection reaches it."""

    def __init__(self, host: Host, domain: libvirt.virDomain) -> None:
        self.host = host
        self.domain = domain
        self.name = domain.name()

    @property
    def state(self) -> VmState:
        with self.host.errors(f"read state of {self.name}"):
            code, _reason = self.domain.state()
        return STATES.get(code, VmState.UNKNOWN)

    def paused_for_io_error(self) -> bool:
        """Whether QEMU paused the guest because its storage failed (the disks' error policy)."""
        with self.host.errors(f"read state of {self.name}"):
            code, reason = self.domain.state()
        return code == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR

    def resume(self) -> None:
        """Let a paused guest run on; QEMU retries the I/O that failed first."""
        with self.host.errors(f"resume {self.name}"):
            self.domain.resume()

    @property
    def is_active(self) -> bool:
        with self.host.errors(f"read state of {self.name}"):
            return bool(self.domain.isActive())

    def launch(self) -> None:
        """Boot the defined domain."""
        with self.host.errors(f"start {self.name}"):
            self.domain.create()
        log.info("started domain %s", self.name)

    def shutdown(self, grace: float) -> bool:
        """Ask the guest to power off (ACPI) and wait up to ``grace`` seconds; True if it did."""
        with self.host.errors(f"shut down {self.name}"):
            try:
                self.domain.shutdown()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not self.domain.isActive():
                    return True  # it stopped on its own meanwhile
                raise
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.is_active:
                log.info("domain %s shut down", self.name)
                return True
            time.sleep(POLL_INTERVAL)
        return not self.is_active

    def poweroff(self) -> None:
        """Pull the plug."""
        with self.host.errors(f"power off {self.name}"):
            try:
                self.domain.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not self.domain.isActive():
                    return
                raise
        log.info("powered off domain %s", self.name)

    def reboot(self) -> None:
        with self.host.errors(f"reboot {self.name}"):
            self.domain.reboot(0)
        log.info("rebooted domain %s", self.name)

    def undefine(self) -> None:
        """Forget the definition (and any saved state); the engine owns it."""
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        with self.host.errors(f"undefine {self.name}"):
            try:
                self.domain.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        log.info("undefined domain %s", self.name)

    def attach_device(self, device_xml: str) -> None:
        """Hot-plug a device into the running domain and its definition."""
        with self.host.errors(f"attach a device to {self.name}"):
            self.domain.attachDeviceFlags(device_xml, LIVE_AND_CONFIG)

    def detach_device(self, device_xml: str) -> None:
        """Ask the running domain to release a device (the guest acknowledges it later)."""
        with self.host.errors(f"detach a device from {self.name}"):
            self.domain.detachDeviceFlags(device_xml, LIVE_AND_CONFIG)

    def block_resize(self, device: str, size_bytes: int) -> None:
        """Grow a disk of the running domain (its image too); the guest sees the new size."""
        with self.host.errors(f"resize disk {device} of {self.name}"):
            self.domain.blockResize(device, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def xml(self) -> str:
        with self.host.errors(f"read definition of {self.name}"):
            return self.domain.XMLDesc(0)

    def migratable_xml(self, vnc_listen: str) -> str:
        """The definition the destination gets: this one, with its consoles listening there."""
        with self.host.errors(f"read definition of {self.name}"):
            text = self.domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
        root = ET.fromstring(text)
        for graphics in root.iter("graphics"):
            if "listen" in graphics.attrib:
                graphics.set("listen", vnc_listen)
            for listen in graphics.iter("listen"):
                if listen.get("type") == "address":
                    listen.set("address", vnc_listen)
        return ET.tostring(root, encoding="unicode")

    def migrate(self, address: str, vnc_listen: str) -> None:
        """Live-migrate to the libvirtd listening on ``address`` (TCP), migration data over TCP
        to the same address; blocks until it is done or failed (then the guest runs on here)."""
        params = {
            libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{_uri_host(address)}",
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: self.migratable_xml(vnc_listen),
        }
        with self.host.errors(f"migrate {self.name} to {address}"):
            self.domain.migrateToURI3(f"qemu+tcp://{_uri_host(address)}/system", params, MIGRATE_FLAGS)
        log.info("migrated domain %s to %s", self.name, address)

    def abort_job(self) -> None:
        """Cancel a migration under way (the guest stays here)."""
        try:
            self.domain.abortJob()
        except libvirt.libvirtError as exc:
            log.info("could not abort the job of %s: %s", self.name, exc)


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
