"""The shared libvirtd answers on qemu:///system and runs a real KVM guest."""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET

import pytest

from tests.support.libvirtd import virsh

libvirt = pytest.importorskip("libvirt")

# No disk, boots from the network it does not have: enough for QEMU to run under KVM.
TINY_DOMAIN = """<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices><graphics type='vnc' listen='127.0.0.1' port='-1'/></devices>
</domain>"""


def test_capabilities_answer(libvirtd):
    result = virsh(libvirtd.uri, "capabilities")
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout)
    assert root.find("host/cpu/arch").text == "x86_64"
    assert root.findall("guest/arch[@name='x86_64']")


def test_tiny_domain_without_disk_starts(libvirtd):
    domain_type = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"
    name = "swtest-tiny-%s" % uuid.uuid4().hex[:8]
    connection = libvirt.open(libvirtd.uri)
    try:
        domain = connection.createXML(TINY_DOMAIN.format(domain_type=domain_type, name=name), 0)
        try:
            state, _reason = domain.state()
            assert state == libvirt.VIR_DOMAIN_RUNNING
            assert ET.fromstring(domain.XMLDesc()).get("type") == domain_type
        finally:
            domain.destroy()
        with pytest.raises(libvirt.libvirtError):
            connection.lookupByName(name)
    finally:
        connection.close()
