"""Storage drivers, looked up by kind."""

from __future__ import annotations

from stackwright.agent.hypervisor import load_registered
from stackwright.agent.storage.base import StorageDriver

DRIVERS: dict[str, tuple[str, str]] = {
    "nfs": ("stackwright.agent.storage.nfs", "NfsStorageDriver"),
    "simulator": ("stackwright.agent.storage.simulator", "SimulatorStorageDriver"),
}


def get_storage_driver(kind: str = "nfs", **opts: object) -> StorageDriver:
    """Build the storage driver registered under ``kind`` with its keyword options."""
    return load_registered(DRIVERS, kind, "storage driver", **opts)
