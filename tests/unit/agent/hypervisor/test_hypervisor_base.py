"""The neutral driver types shared by every hypervisor driver."""

import pytest

from stackwright.agent.hypervisor.base import HypervisorDriver, NfsSource, VmState, join_export_path, nfs_path, nfs_url


def test_vm_states_are_cloudstack_names():
    assert [state.value for state in VmState] == ["Running", "Stopped", "Starting", "Stopping", "Unknown"]
    assert VmState("Running") is VmState.RUNNING
    assert f"{VmState.STOPPED}" == "Stopped"


@pytest.mark.parametrize(
    ("source", "url", "full_path"),
    [
        (NfsSource(server="10.0.0.9", export="/export/primary", path="root.qcow2"),
         "nfs://10.0.0.9/export/primary/root.qcow2", "/export/primary/root.qcow2"),
        (NfsSource(server="nfs.example.org", export="/export/primary/", path="/sub/v.raw", port=2049),
         "nfs://nfs.example.org:2049/export/primary/sub/v.raw", "/export/primary/sub/v.raw"),
    ],
)
def test_nfs_source_addresses(source, url, full_path):
    assert nfs_url(source) == url
    assert nfs_path(source) == full_path


def test_join_export_path_never_doubles_slashes():
    assert join_export_path("/", "a") == "/a"
    assert join_export_path("/e/", "") == "/e"


def test_driver_interface_is_abstract():
    with pytest.raises(TypeError):
        HypervisorDriver()
