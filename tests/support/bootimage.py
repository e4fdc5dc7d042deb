"""The bootable test image: stackwright.bootimage, which `make cloud` uses too."""

from stackwright.bootimage import BOOT_MARKER, DISKS_MARKER, Unavailable, bootable_qcow2, build, kvm_boots

__all__ = ["BOOT_MARKER", "DISKS_MARKER", "Unavailable", "bootable_qcow2", "build", "kvm_boots"]
