"""A small bootable disk image, built offline from Debian packages on this machine.

The tests boot it on real KVM hosts and `make cloud` registers it as the cloud's first
template (`python -m stackwright.bootimage --output PATH` builds it where the playbook says).

The disk is a FAT file system over the whole disk (no partition table) that SYSLINUX boots
(`syslinux --install` writes its boot sector through mtools, no mount needed). It holds the
host's Debian kernel (`linux-image-cloud-amd64`) and an initramfs of a static BusyBox
(`busybox-static`) whose /init prints `BOOT_MARKER` and the kernel command line on the
serial console, then reports on the serial console how many virtio disks it has
(`DISKS_MARKER <n>`) at boot and whenever that changes (a disk hot-plugged or unplugged).
The raw disk is converted to qcow2 and cached under
`$XDG_CACHE_HOME/stackwright/test-images` (default ~/.cache), keyed by the kernel and
BusyBox it was made from.

It needs the packages linux-image-cloud-amd64, busybox-static, syslinux, mtools,
dosfstools and qemu-utils.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BOOT_MARKER = "STACKWRIGHT-GUEST-BOOTED"
DISKS_MARKER = "STACKWRIGHT-VIRTIO-DISKS"
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
TOOLS = ("syslinux", "mcopy", "mkfs.fat", "qemu-img")
DISK_KIB = 48 * 1024

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "%s $(/bin/busybox cat /proc/cmdline)" > /dev/ttyS0
last=""
while true; do
  n=$(/bin/busybox cat /sys/bus/pci/devices/*/device | /bin/busybox grep -c -e 0x1001 -e 0x1042)
  [ "$n" = "$last" ] || echo "%s $n" > /dev/ttyS0
  last=$n
  /bin/busybox sleep 1
done
""" % (BOOT_MARKER, DISKS_MARKER)

SYSLINUX_CFG = """SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 1
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd.img console=ttyS0,115200 panic=-1 quiet
"""


class Unavailable(RuntimeError):
    """A package the image is built from is not installed; the message names it."""


def kernel() -> Path:
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    if not found:
        raise Unavailable("no kernel in /boot: install linux-image-cloud-amd64")
    return found[-1]


def busybox() -> Path:
    for candidate in BUSYBOX:
        path = Path(candidate)
        # A dynamic executable names its loader (PT_INTERP) near its start.
        if path.exists() and b"ld-linux" not in path.read_bytes()[:4096]:
            return path
    raise Unavailable("no static busybox: install busybox-static")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stackwright" / "test-images"


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed cpio archive (newc), as the kernel unpacks an initramfs."""
    out = bytearray()
    for inode, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        header = "070701" + "".join("%08X" % value for value in (
            inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0))
        out += header.encode() + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(busybox_path: Path) -> bytes:
    directory, regular, link = 0o040755, 0o100755, 0o120777
    entries = [("bin", directory, b""), ("proc", directory, b""), ("sys", directory, b""), ("dev", directory, b""),
               ("bin/busybox", regular, busybox_path.read_bytes()), ("bin/sh", link, b"busybox"),
               ("init", regular, INIT.encode())]
    return _newc(entries)


def build(target: Path) -> Path:
    """Build the qcow2 at `target`."""
    missing = missing_tools()
    if missing:
        raise Unavailable("missing %s: install syslinux, mtools, dosfstools and qemu-utils" % ", ".join(missing))
    vmlinuz, box = kernel(), busybox()
    with tempfile.TemporaryDirectory(prefix="bootimage-") as scratch:
        work = Path(scratch)
        raw = work / "disk.raw"
        (work / "initrd.img").write_bytes(initramfs(box))
        (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
        shutil.copyfile(vmlinuz, work / "vmlinuz")
        for argv in (["mkfs.fat", "-C", str(raw), str(DISK_KIB)],
                     ["syslinux", "--install", str(raw)],
                     ["mcopy", "-i", str(raw), str(work / "vmlinuz"), str(work / "initrd.img"),
                      str(work / "syslinux.cfg"), "::/"],
                     ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(target) + ".part"]):
            run = subprocess.run(argv, capture_output=True, text=True, check=False,
                                 env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
            if run.returncode != 0:
                raise RuntimeError("%s failed: %s" % (" ".join(argv), run.stderr.strip() or run.stdout.strip()))
    os.replace(str(target) + ".part", target)
    return target


def bootable_qcow2() -> Path:
    """The cached image, built when the kernel or BusyBox changed (or it was never built)."""
    vmlinuz, box = kernel(), busybox()
    key = hashlib.sha256()
    for path in (vmlinuz, box):
        stat = path.stat()
        key.update(("%s:%d:%d;" % (path, stat.st_size, int(stat.st_mtime))).encode())
    key.update((INIT + SYSLINUX_CFG).encode())
    target = cache_dir() / ("boot-%s.qcow2" % key.hexdigest()[:16])
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        build(target)
    return target


def kvm_boots(image: Path, timeout: float = 30.0) -> bool:
    """Whether QEMU with KVM boots `image` to the marker here (nested KVM may not run Linux)."""
    import time

    if not Path("/dev/kvm").exists() or shutil.which("qemu-system-x86_64") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as scratch:
        log = Path(scratch) / "serial.log"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-enable-kvm", "-m", "256", "-snapshot", "-display", "none", "-monitor", "none",
             "-drive", "file=%s,if=virtio,format=qcow2" % image, "-serial", "file:%s" % log],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if log.exists() and BOOT_MARKER in log.read_text(errors="replace"):
                    return True
                time.sleep(0.5)
            return False
        finally:
            proc.kill()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Build the image at --output unless it is already there; print its path, size and SHA-256 as JSON."""
    ap = argparse.ArgumentParser(prog="python -m stackwright.bootimage", description=main.__doc__)
    ap.add_argument("--output", type=Path, help="where the qcow2 goes (default: the cache)")
    args = ap.parse_args(argv)
    try:
        target = bootable_qcow2() if args.output is None else args.output
        changed = False
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            build(target)
            changed = True
    except Unavailable as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    digest = hashlib.sha256()
    with open(target, "rb") as image:
        for block in iter(lambda: image.read(1 << 20), b""):
            digest.update(block)
    print(json.dumps({"path": str(target), "size": target.stat().st_size, "sha256": digest.hexdigest(),
                      "changed": changed, "boot_marker": BOOT_MARKER}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
