"""Domain XML objects against the exact XML they must produce, and back."""

from textwrap import dedent

import pytest

from stackwright.agent.hypervisor.libvirt import xml


def expected(text: str) -> str:
    return dedent(text).strip()


def test_memory_renders_kib_and_parses_other_units():
    assert xml.Memory(65536).to_xml() == '<memory unit="KiB">65536</memory>'
    assert xml.Memory(1024, "currentMemory").to_xml() == '<currentMemory unit="KiB">1024</currentMemory>'
    assert xml.Memory.parse("<memory unit='MiB'>64</memory>").kib == 65536
    assert xml.Memory.parse("<memory unit='GiB'>2</memory>").kib == 2 * 1024 * 1024
    assert xml.Memory.parse("<memory>512</memory>").kib == 512


def test_memory_rejects_unknown_unit_and_wrong_element():
    with pytest.raises(ValueError, match="unknown memory unit 'parsecs'"):
        xml.Memory.parse("<memory unit='parsecs'>1</memory>")
    with pytest.raises(ValueError, match="expected <memory> or <currentMemory>"):
        xml.Memory.parse("<vcpu>1</vcpu>")


def test_cpu_with_mode_model_and_topology():
    cpu = xml.Cpu(mode="custom", model="qemu64", check="none",
                  topology=xml.CpuTopology(sockets=1, cores=2, threads=1))
    assert cpu.to_xml() == expected("""
        <cpu mode="custom" check="none">
          <model fallback="allow">qemu64</model>
          <topology sockets="1" cores="2" threads="1" />
        </cpu>
    """)
    assert xml.Cpu.parse(cpu.to_xml()) == cpu


def test_cpu_host_passthrough():
    assert xml.Cpu(mode="host-passthrough").to_xml() == '<cpu mode="host-passthrough" />'


def test_cputune_shares():
    assert xml.CpuTune(shares=1000).to_xml() == expected("""
        <cputune>
          <shares>1000</shares>
        </cputune>
    """)


def test_cputune_quota_and_period():
    tune = xml.CpuTune(shares=1000, period=100000, quota=50000)
    assert tune.to_xml() == expected("""
        <cputune>
          <shares>1000</shares>
          <period>100000</period>
          <quota>50000</quota>
        </cputune>
    """)
    assert xml.CpuTune.parse(tune.to_xml()) == tune


def test_memballoon():
    assert xml.MemBalloon().to_xml() == '<memballoon model="virtio" />'
    assert xml.MemBalloon.parse("<memballoon model='virtio'><alias name='balloon0'/></memballoon>") == xml.MemBalloon()


def test_os_with_arch_machine_and_boot_order():
    os_element = xml.Os(arch="x86_64", machine="pc", boot=["cdrom", "hd"])
    assert os_element.to_xml() == expected("""
        <os>
          <type arch="x86_64" machine="pc">hvm</type>
          <boot dev="cdrom" />
          <boot dev="hd" />
        </os>
    """)
    assert xml.Os.parse(os_element.to_xml()) == os_element


def test_file_disk():
    disk = xml.Disk(target_dev="vda", driver_type="qcow2", source_file="/mnt/pool/root.qcow2")
    assert disk.to_xml() == expected("""
        <disk type="file" device="disk">
          <driver name="qemu" type="qcow2" />
          <source file="/mnt/pool/root.qcow2" />
          <target dev="vda" bus="virtio" />
        </disk>
    """)
    assert xml.Disk.parse(disk.to_xml()) == disk


def test_nfs_network_disk_with_host_port_and_identity():
    disk = xml.Disk(
        target_dev="vdb",
        driver_type="raw",
        source_protocol="nfs",
        source_name="/export/primary/data.raw",
        hosts=[xml.DiskHost(name="nfs.example.org", port=2049)],
        identity_user="root",
        identity_group="root",
    )
    assert disk.type == "network"
    assert disk.to_xml() == expected("""
        <disk type="network" device="disk">
          <driver name="qemu" type="raw" />
          <source protocol="nfs" name="/export/primary/data.raw">
            <host name="nfs.example.org" port="2049" />
            <identity user="root" group="root" />
          </source>
          <target dev="vdb" bus="virtio" />
        </disk>
    """)
    assert xml.Disk.parse(disk.to_xml()) == disk


def test_disk_error_policies():
    disk = xml.Disk(target_dev="vda", source_file="/mnt/pool/root.qcow2", error_policy="stop", rerror_policy="stop")
    assert disk.to_xml() == expected("""
        <disk type="file" device="disk">
          <driver name="qemu" type="qcow2" error_policy="stop" rerror_policy="stop" />
          <source file="/mnt/pool/root.qcow2" />
          <target dev="vda" bus="virtio" />
        </disk>
    """)
    assert xml.Disk.parse(disk.to_xml()) == disk


def test_readonly_cdrom_with_cache():
    disk = xml.Disk(target_dev="hdc", target_bus="ide", device="cdrom", driver_type="raw",
                    source_file="/isos/boot.iso", cache="none", readonly=True)
    assert disk.to_xml() == expected("""
        <disk type="file" device="cdrom">
          <driver name="qemu" type="raw" cache="none" />
          <source file="/isos/boot.iso" />
          <target dev="hdc" bus="ide" />
          <readonly />
        </disk>
    """)
    assert xml.Disk.parse(disk.to_xml()) == disk


def test_bridge_interface():
    nic = xml.Interface(mac="02:00:0a:00:00:01", bridge="cloudbr0")
    assert nic.to_xml() == expected("""
        <interface type="bridge">
          <mac address="02:00:0a:00:00:01" />
          <source bridge="cloudbr0" />
          <model type="virtio" />
        </interface>
    """)
    assert xml.Interface.parse(nic.to_xml()) == nic


def test_vnc_graphics_on_autoport_with_password():
    graphics = xml.Graphics(listen="10.1.1.5", password="s3cret")
    assert graphics.to_xml() == expected("""
        <graphics type="vnc" autoport="yes" listen="10.1.1.5" passwd="s3cret">
          <listen type="address" address="10.1.1.5" />
        </graphics>
    """)
    assert xml.Graphics.parse(graphics.to_xml()) == graphics


def test_vnc_graphics_on_fixed_port():
    graphics = xml.Graphics(listen="127.0.0.1", port=5901)
    assert graphics.to_xml() == expected("""
        <graphics type="vnc" port="5901" autoport="no" listen="127.0.0.1">
          <listen type="address" address="127.0.0.1" />
        </graphics>
    """)
    assert xml.Graphics.parse(graphics.to_xml()) == graphics


def test_serial_and_console():
    serial = xml.CharDevice(element_name="serial")
    console = xml.CharDevice(element_name="console", target_type="serial")
    assert serial.to_xml() == expected("""
        <serial type="pty">
          <target port="0" />
        </serial>
    """)
    assert console.to_xml() == expected("""
        <console type="pty">
          <target type="serial" port="0" />
        </console>
    """)
    assert xml.CharDevice.parse(console.to_xml()) == console


def full_domain() -> xml.Domain:
    return xml.Domain(
        name="i-2-10-VM",
        uuid="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        type="kvm",
        memory=xml.Memory(524288),
        current_memory=xml.Memory(262144, "currentMemory"),
        vcpus=2,
        cputune=xml.CpuTune(shares=2000, period=100000, quota=40000),
        cpu=xml.Cpu(mode="host-model"),
        os=xml.Os(arch="x86_64", boot=["hd"]),
        features=["acpi", "apic"],
        disks=[xml.Disk(target_dev="vda", source_file="/mnt/p/root.qcow2")],
        interfaces=[xml.Interface(mac="02:00:0a:00:00:01", bridge="cloudbr0")],
        serials=[xml.CharDevice(element_name="serial")],
        consoles=[xml.CharDevice(element_name="console", target_type="serial")],
        graphics=[xml.Graphics(listen="10.1.1.5")],
        memballoon=xml.MemBalloon(),
    )


def test_domain():
    assert full_domain().to_xml() == expected("""
        <domain type="kvm">
          <name>i-2-10-VM</name>
          <uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
          <memory unit="KiB">524288</memory>
          <currentMemory unit="KiB">262144</currentMemory>
          <vcpu>2</vcpu>
          <cputune>
            <shares>2000</shares>
            <period>100000</period>
            <quota>40000</quota>
          </cputune>
          <os>
            <type arch="x86_64">hvm</type>
            <boot dev="hd" />
          </os>
          <features>
            <acpi />
            <apic />
          </features>
          <cpu mode="host-model" />
          <clock offset="utc" />
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <devices>
            <disk type="file" device="disk">
              <driver name="qemu" type="qcow2" />
              <source file="/mnt/p/root.qcow2" />
              <target dev="vda" bus="virtio" />
            </disk>
            <interface type="bridge">
              <mac address="02:00:0a:00:00:01" />
              <source bridge="cloudbr0" />
              <model type="virtio" />
            </interface>
            <serial type="pty">
              <target port="0" />
            </serial>
            <console type="pty">
              <target type="serial" port="0" />
            </console>
            <graphics type="vnc" autoport="yes" listen="10.1.1.5">
              <listen type="address" address="10.1.1.5" />
            </graphics>
            <memballoon model="virtio" />
          </devices>
        </domain>
    """)


def test_domain_round_trips():
    domain = full_domain()
    assert xml.Domain.parse(domain.to_xml()) == domain


def test_domain_parse_reads_what_libvirt_adds_and_skips_the_rest():
    # Shaped like `virsh dumpxml` output: extra elements and attributes libvirt fills in.
    dumped = """
    <domain type='kvm' id='3'>
      <name>i-2-11-VM</name>
      <uuid>2b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
      <memory unit='KiB'>65536</memory>
      <vcpu placement='static'>1</vcpu>
      <resource><partition>/machine</partition></resource>
      <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
      <devices>
        <emulator>/usr/bin/qemu-system-x86_64</emulator>
        <disk type='network' device='disk'>
          <driver name='qemu' type='qcow2'/>
          <source protocol='nfs' name='/export/v.qcow2' index='1'><host name='127.0.0.1'/></source>
          <target dev='vda' bus='virtio'/>
          <alias name='virtio-disk0'/>
        </disk>
        <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
          <listen type='address' address='127.0.0.1'/>
        </graphics>
      </devices>
    </domain>
    """
    domain = xml.Domain.parse(dumped)
    assert (domain.name, domain.type, domain.vcpus, domain.memory.kib) == ("i-2-11-VM", "kvm", 1, 65536)
    assert domain.os.machine == "pc-i440fx-7.2"
    assert domain.disks[0].source_name == "/export/v.qcow2"
    assert domain.disks[0].hosts == [xml.DiskHost(name="127.0.0.1")]
    assert domain.graphics[0].port is None  # chosen by libvirt, not fixed by us


def test_parse_rejects_the_wrong_element():
    with pytest.raises(ValueError, match="expected <domain>, got <disk>"):
        xml.Domain.parse("<disk/>")


def test_vnc_display_of_a_running_domain():
    # As libvirt shows a running guest under autoport: the port it chose, autoport still yes.
    running = """<domain type='kvm'><name>i-2-3-VM</name><devices>
      <graphics type='vnc' port='5901' autoport='yes' listen='10.0.0.5'>
        <listen type='address' address='10.0.0.5'/>
      </graphics></devices></domain>"""
    assert xml.vnc_display(running) == ("10.0.0.5", 5901)
    child_only = running.replace(" listen='10.0.0.5'>", ">")
    assert xml.vnc_display(child_only) == ("10.0.0.5", 5901)
    assert xml.vnc_display(running.replace("port='5901'", "port='-1'"))[1] == -1
    assert xml.vnc_display("<domain><devices/></domain>") == ("", -1)
