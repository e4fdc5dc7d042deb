"""The test NFS server itself: loopback only, registered with the portmapper, reusable."""

from __future__ import annotations

import ipaddress
import subprocess

from tests.support.nfs import MOUNT_PORT, MOUNT_PROGRAM, NFS_PORT, NFS_PROGRAM, NfsTestServer, pmap_getport


def listening_addresses(process_names: set[str]) -> list[str]:
    """Local addresses of every TCP/UDP socket those processes listen on."""
    output = subprocess.run(["ss", "-H", "-l", "-n", "-p", "-t", "-u"], capture_output=True, text=True,
                            check=True).stdout
    addresses = []
    for line in output.splitlines():
        if any(f'"{name}",pid=' in line for name in process_names):
            local = line.split()[4]
            addresses.append(local.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:"))
    return addresses


def test_services_are_registered_with_the_portmapper(nfs_server):
    assert pmap_getport(nfs_server.host, NFS_PROGRAM, 3) == NFS_PORT
    assert pmap_getport(nfs_server.host, MOUNT_PROGRAM, 3) == MOUNT_PORT


def test_nothing_listens_beyond_loopback(nfs_server):
    addresses = listening_addresses({"ganesha.nfsd", "rpcbind"})
    assert addresses, "expected ganesha (and a portmapper) to be listening"
    for address in addresses:
        assert address != "*" and ipaddress.ip_address(address).is_loopback, addresses


def test_a_second_server_object_reuses_the_running_one(nfs_server):
    other = NfsTestServer(nfs_server.state_dir)
    other.start()
    assert not other.started_here
    other.stop()  # stops nothing it did not start
    assert pmap_getport(nfs_server.host, NFS_PROGRAM, 3) == NFS_PORT


def test_exports_answer_over_both_nfs_versions(nfs_server):
    for url in (nfs_server.primary.url, f"{nfs_server.primary.url}?version=4"):
        result = subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
    info = subprocess.run(["rpcinfo", "-p", nfs_server.host], capture_output=True, text=True, timeout=30, check=False)
    assert "nfs" in info.stdout and "mountd" in info.stdout
