"""Errors raised inside the host agent.

Every failure a driver or handler can report to the engine is an `AgentError`
with a stable `code` (sent over the wire in an ``ErrorAnswer``) and a message
that names what went wrong and, where possible, how to fix it.  Drivers turn
library exceptions (libvirt, NFS, OS errors) into these at their boundary.
"""


class AgentError(Exception):
    """Base class: ``AgentError(code, message)``; subclasses fix the code."""

    code = "agent_error"

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class _CodedError(AgentError):
    """An `AgentError` whose code is a class attribute: ``VmNotFound(message)``."""

    code = "agent_error"

    def __init__(self, message: str):
        super().__init__(type(self).code, message)


class ConfigError(_CodedError):
    """agent.properties or the command line is invalid."""

    code = "config_invalid"


class EnrollmentError(_CodedError):
    """Obtaining a certificate from the engine failed."""

    code = "enrollment_failed"


class UnsupportedCommand(_CodedError):
    """The agent has no handler for a command the engine sent."""

    code = "unsupported_command"


class HypervisorError(_CodedError):
    """The hypervisor refused or failed an operation."""

    code = "hypervisor_error"


class HypervisorUnavailable(HypervisorError):
    """The hypervisor (libvirtd, ...) cannot be reached."""

    code = "hypervisor_unavailable"


class VmNotFound(HypervisorError):
    """No guest of that name exists on this host."""

    code = "vm_not_found"


class VmAlreadyExists(HypervisorError):
    """A guest of that name is already defined or running."""

    code = "vm_exists"


class InsufficientCapacity(HypervisorError):
    """The host lacks the CPU or memory a guest asks for."""

    code = "insufficient_capacity"


class InvalidSpec(_CodedError):
    """A VM, disk or pool specification is inconsistent or incomplete."""

    code = "invalid_spec"


class StorageError(_CodedError):
    """A storage operation failed."""

    code = "storage_error"


class StorageUnreachable(StorageError):
    """A storage server or export cannot be reached or written."""

    code = "storage_unreachable"


class VolumeNotFound(StorageError):
    """A volume does not exist in the pool."""

    code = "volume_not_found"


class StorageNotWritable(StorageError):
    """A storage export answers but refuses writes."""

    code = "storage_not_writable"


class VolumeExists(StorageError):
    """A volume of that name is already in the pool."""

    code = "volume_exists"
