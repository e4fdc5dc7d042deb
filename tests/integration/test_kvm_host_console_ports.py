"""The kvm_host role keeps guests' VNC displays to 5900-6100 in qemu.conf: check mode and diff
change nothing, the first run writes both settings beside the examples qemu.conf ships with, a
second run changes nothing, and a range outside the VNC ports is refused.

It runs the role's console_ports.yml on a copy of this machine's qemu.conf (Debian's, from
libvirt-daemon-driver-qemu, without the two settings), with a PID file that names no libvirtd,
so nothing is restarted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ansible import ansible_env, collection_tree

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def play(tmp_path, conf, check=False, **extra):
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": dict({"kvm_host_qemu_conf": str(conf), "kvm_host_libvirtd_pid_file": str(tmp_path / "none.pid"),
                      "runtime_manager": "direct"}, **extra),
        "tasks": [{"name": "console ports", "ansible.builtin.include_role": {
            "name": "stackwright.cloudstack.kvm_host", "tasks_from": "console_ports"}}],
    }]))
    tree = tmp_path / "collections"
    if not tree.exists():
        collection_tree(tree)
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "--diff"] + (["--check"] if check else [])
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env=ansible_env(tree, tmp_path))


def recap(run):
    assert "PLAY RECAP" in run.stdout, run.stdout + run.stderr
    line = run.stdout.split("PLAY RECAP", 1)[1]
    return {key: int(value) for key, value in (part.split("=") for part in line.split() if "=" in part)}


@pytest.mark.skipif(not QEMU_CONF.exists(), reason="needs libvirt-daemon-driver-qemu's /etc/libvirt/qemu.conf")
def test_the_vnc_port_range_is_set_in_qemu_conf_idempotently(tmp_path):
    conf = tmp_path / "qemu.conf"
    # As Debian ships it: without the settings a run of the role (make cloud) left here.
    shipped = "".join(line for line in QEMU_CONF.read_text().splitlines(keepends=True)
                      if not line.startswith(("remote_display_port_min", "remote_display_port_max")))
    assert "#remote_display_port_min" in shipped and "#remote_display_port_max" in shipped
    conf.write_text(shipped)

    checked = play(tmp_path, conf, check=True)
    assert checked.returncode == 0 and recap(checked)["changed"] == 1, checked.stdout
    assert "+remote_display_port_min = 5900" in checked.stdout and "+remote_display_port_max = 6100" in checked.stdout
    assert conf.read_text() == shipped

    applied = play(tmp_path, conf)
    assert applied.returncode == 0 and recap(applied)["changed"] == 1, applied.stdout
    lines = conf.read_text().splitlines()
    for key, value in (("remote_display_port_min", 5900), ("remote_display_port_max", 6100)):
        assert lines.count("%s = %d" % (key, value)) == 1
        # Right after the commented-out example of the same setting.
        assert lines[lines.index("%s = %d" % (key, value)) - 1].startswith("#%s" % key)
    assert len(lines) == len(shipped.splitlines()) + 2

    again = play(tmp_path, conf)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout

    refused = play(tmp_path, conf, kvm_host_vnc_port_min=6200, kvm_host_vnc_port_max=6100)
    assert refused.returncode != 0
    assert "must be a range within 5900-65535" in refused.stdout, refused.stdout
