"""Hypervisor drivers, looked up by kind.

Drivers are imported on first use so that a host running the simulator does
not need libvirt's Python bindings.
"""

from __future__ import annotations

import importlib

from stackwright.agent.errors import InvalidSpec
from stackwright.agent.hypervisor.base import HypervisorDriver

DRIVERS: dict[str, tuple[str, str]] = {
    "libvirt": ("stackwright.agent.hypervisor.libvirt.driver", "LibvirtDriver"),
    "simulator": ("stackwright.agent.hypervisor.simulator", "SimulatorDriver"),
}


def load_registered(registry: dict[str, tuple[str, str]], kind: str, what: str, **opts: object):
    """Import and build the class ``registry`` names for ``kind``."""
    try:
        module_name, class_name = registry[kind]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise InvalidSpec(f"unknown {what} {kind!r}; choose one of: {known}") from None
    return getattr(importlib.import_module(module_name), class_name)(**opts)


def get_driver(kind: str, **opts: object) -> HypervisorDriver:
    """Build the driver registered under ``kind`` with its keyword options."""
    return load_registered(DRIVERS, kind, "hypervisor driver", **opts)
