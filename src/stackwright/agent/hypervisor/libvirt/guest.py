"""One libvirt domain, driven through intent-named methods."""

from __future__ import annotations

import logging
import time

import libvirt

from stackwright.agent.hypervisor.base import VmState
from stackwright.agent.hypervisor.libvirt.host import Host

log = logging.getLogger(__name__)

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

    def xml(self) -> str:
        with self.host.errors(f"read definition of {self.name}"):
            return self.domain.XMLDesc(0)
