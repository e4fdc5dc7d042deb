"""libvirt_tcp against a real libvirtd running in its own namespaces (restarting it is safe)."""

from __future__ import annotations

from pathlib import Path

from tests.support.libvirtd import virsh

TCP_URI = "qemu+tcp://127.0.0.1:16509/system"


def module_args(instance, **overrides):
    args = {
        "listen_tcp": True,
        "listen_tls": False,
        "tcp_port": 16509,
        "listen_addr": "127.0.0.1",
        "auth_tcp": "none",
        "verify": True,
        "service_manager": "direct",
        "config_file": str(instance.config_file),
        "defaults_file": str(instance.defaults_file),
        "pid_file": instance.pid_file,
    }
    args.update(overrides)
    return args


def test_tcp_listening_is_configured_verified_and_idempotent(isolated_libvirtd, run_module):
    instance = isolated_libvirtd
    wrap = instance.exec_argv([])
    comments_before = [line for line in instance.config_file.read_text().splitlines() if line.startswith("#")]
    first_pid = instance.daemon_pid()
    assert first_pid is not None
    assert virsh(TCP_URI, "version", timeout=10, wrap=wrap).returncode != 0

    checked = run_module("libvirt_tcp", module_args(instance), wrap=wrap, check=True)
    assert checked["changed"] is True and checked["restarted"] is True, checked
    assert instance.daemon_pid() == first_pid
    original = instance.config_file.read_text()
    assert "listen_tcp = 1" not in original.splitlines()

    applied = run_module("libvirt_tcp", module_args(instance), wrap=wrap)
    assert applied["changed"] is True and applied["restarted"] is True, applied
    assert applied["uri"] == TCP_URI
    second_pid = instance.daemon_pid()
    assert second_pid is not None and second_pid != first_pid
    assert applied["pid"] == second_pid
    assert virsh(TCP_URI, "version", timeout=10, wrap=wrap).returncode == 0

    text = instance.config_file.read_text()
    for line in ("listen_tcp = 1", "listen_tls = 0", 'tcp_port = "16509"', 'listen_addr = "127.0.0.1"',
                 'auth_tcp = "none"'):
        assert line in text.splitlines()
    # Every comment of the shipped file is still there, in order.
    assert [line for line in text.splitlines() if line.startswith("#")] == comments_before
    assert 'LIBVIRTD_ARGS="--listen"' in instance.defaults_file.read_text().splitlines()
    paths = {d["after_header"] for d in applied["diff"]}
    assert paths == {str(instance.config_file), str(instance.defaults_file)}

    again = run_module("libvirt_tcp", module_args(instance), wrap=wrap)
    assert again["changed"] is False and again["restarted"] is False, again
    assert instance.daemon_pid() == second_pid
    assert instance.config_file.read_text() == text


def test_unreachable_verify_fails_clearly(isolated_libvirtd, run_module):
    instance = isolated_libvirtd
    wrap = instance.exec_argv([])
    run_module("libvirt_tcp", module_args(instance), wrap=wrap)
    result = run_module("libvirt_tcp", module_args(instance, verify_address="127.0.0.2", timeout=2), wrap=wrap)
    assert result["failed"] is True
    assert "could not connect to qemu+tcp://127.0.0.2:16509/system" in result["msg"]


def test_absent_restarts_a_running_daemon_without_listening(isolated_libvirtd, run_module):
    instance = isolated_libvirtd
    wrap = instance.exec_argv([])
    shipped_conf = instance.config_file.read_text()
    shipped_defaults = instance.defaults_file.read_text()
    run_module("libvirt_tcp", module_args(instance), wrap=wrap)
    listening_pid = instance.daemon_pid()
    assert virsh(TCP_URI, "version", timeout=10, wrap=wrap).returncode == 0
    absent = {"state": "absent", "service_manager": "direct", "config_file": str(instance.config_file),
              "defaults_file": str(instance.defaults_file), "pid_file": instance.pid_file}

    removed = run_module("libvirt_tcp", absent, wrap=wrap)
    assert removed["changed"] is True and removed["restarted"] is True, removed
    pid = instance.daemon_pid()
    assert pid is not None and pid != listening_pid and removed["pid"] == pid
    assert "--listen" not in Path("/proc/%d/cmdline" % pid).read_text().split("\0")
    assert virsh(TCP_URI, "version", timeout=10, wrap=wrap).returncode != 0
    assert virsh("qemu:///system", "version", timeout=10, wrap=wrap).returncode == 0
    assert instance.config_file.read_text() == shipped_conf
    assert instance.defaults_file.read_text() == shipped_defaults

    again = run_module("libvirt_tcp", absent, wrap=wrap)
    assert again["changed"] is False and again["restarted"] is False, again
    assert instance.daemon_pid() == pid
