"""libvirt_tcp in-process on temp files; the daemon side is covered by tests/host."""

from __future__ import annotations

import os

import pytest

from ansible_collections.stackwright.cloudstack.plugins.module_utils.libvirtd_conf import (
    LIBVIRT,
    SHELL,
    ConfError,
    current_values,
    remove_values,
    set_values,
)
from ansible_collections.stackwright.cloudstack.plugins.modules import libvirt_tcp

SHIPPED_CONF = """\
# Master libvirt daemon configuration file
#
# Flag listening for secure TLS connections on the public TCP/IP port.
#listen_tls = 0

# Listen for unencrypted TCP connections on the public TCP/IP port.
#listen_tcp = 1

#tcp_port = "16509"
max_clients = 5000
"""

SHIPPED_DEFAULTS = """\
# If systemd socket activation is disabled, then the following
# can be used to listen on TCP/TLS sockets
#LIBVIRTD_ARGS="--listen"
"""


def test_setting_goes_right_after_its_commented_example():
    text = set_values(SHIPPED_CONF, {"listen_tcp": True, "tcp_port": "16509"})
    lines = text.splitlines()
    assert lines[lines.index("#listen_tcp = 1") + 1] == "listen_tcp = 1"
    assert lines[lines.index('#tcp_port = "16509"') + 1] == 'tcp_port = "16509"'
    assert [line for line in lines if line.startswith("#")] == [
        line for line in SHIPPED_CONF.splitlines() if line.startswith("#")]
    assert "max_clients = 5000" in lines


def test_setting_without_example_is_appended_and_none_leaves_alone():
    text = set_values(SHIPPED_CONF, {"auth_tcp": "none", "listen_addr": None})
    assert text.splitlines()[-1] == 'auth_tcp = "none"'
    assert "listen_addr" not in text.replace("#", "")


def test_equal_value_is_left_byte_for_byte_and_different_value_rewritten():
    text = 'tcp_port   =   "16509"  # custom\n  listen_tcp = 0\n'
    assert set_values(text, {"tcp_port": "16509"}) == text
    assert set_values(text, {"listen_tcp": True}) == 'tcp_port   =   "16509"  # custom\n  listen_tcp = 1\n'
    assert current_values(text, ["tcp_port", "listen_tcp"]) == {"tcp_port": "16509", "listen_tcp": "0"}


def test_shell_dialect_and_unsafe_values():
    text = set_values(SHIPPED_DEFAULTS, {"LIBVIRTD_ARGS": "--listen"}, SHELL)
    assert text.splitlines()[-1] == 'LIBVIRTD_ARGS="--listen"'
    with pytest.raises(ConfError):
        set_values("", {"listen_addr": '1.2.3.4"; evil'}, LIBVIRT)


@pytest.fixture
def files(tmp_path):
    conf = tmp_path / "libvirtd.conf"
    conf.write_text(SHIPPED_CONF)
    defaults = tmp_path / "libvirtd.default"
    defaults.write_text(SHIPPED_DEFAULTS)
    return conf, defaults, tmp_path / "libvirtd.pid"


def args_for(files, **overrides):
    conf, defaults, pid_file = files
    args = {"config_file": str(conf), "defaults_file": str(defaults), "pid_file": str(pid_file),
            "service_manager": "direct", "listen_tls": False, "tcp_port": 16509, "listen_addr": "127.0.0.1",
            "auth_tcp": "none"}
    args.update(overrides)
    return args


def test_check_mode_reports_changes_and_writes_nothing(run_module, files):
    result = run_module(libvirt_tcp.main, dict(args_for(files), _ansible_check_mode=True, _ansible_diff=True), connection=False)
    assert result["changed"] is True
    assert result["restarted"] is True
    assert files[0].read_text() == SHIPPED_CONF
    assert files[1].read_text() == SHIPPED_DEFAULTS
    assert [d["after_header"] for d in result["diff"]] == [str(files[0]), str(files[1])]
    assert "listen_tcp = 1" in result["diff"][0]["after"].splitlines()


def test_files_written_once_without_restart(run_module, files):
    first = run_module(libvirt_tcp.main, args_for(files, restart=False), connection=False)
    assert first["changed"] is True and first["restarted"] is False
    assert first["changed_files"] == [str(files[0]), str(files[1])]
    assert 'LIBVIRTD_ARGS="--listen"' in files[1].read_text().splitlines()
    second = run_module(libvirt_tcp.main, args_for(files, restart=False), connection=False)
    assert second["changed"] is False
    assert second["changed_files"] == []


def test_turning_listening_off_drops_listen_flag(run_module, files):
    run_module(libvirt_tcp.main, args_for(files, restart=False), connection=False)
    result = run_module(libvirt_tcp.main, args_for(files, restart=False, listen_tcp=False), connection=False)
    assert result["changed"] is True
    assert 'LIBVIRTD_ARGS=""' in files[1].read_text().splitlines()


@pytest.mark.parametrize("overrides, message", [
    ({"tcp_port": 70000}, "tcp_port 70000 is not a TCP port number"),
    ({"listen_addr": 'x" y'}, "contains a quote"),
])
def test_bad_input_fails_clearly_and_changes_nothing(run_module, files, overrides, message):
    result = run_module(libvirt_tcp.main, args_for(files, **overrides), connection=False)
    assert result["failed"] is True
    assert message in result["msg"]
    assert files[0].read_text() == SHIPPED_CONF


def test_missing_config_file_names_the_package(run_module, files, tmp_path):
    result = run_module(libvirt_tcp.main, args_for(files, config_file=str(tmp_path / "absent.conf")), connection=False)
    assert result["failed"] is True
    assert "install libvirt-daemon-system" in result["msg"]


def test_removed_settings_leave_comments_and_other_settings():
    applied = set_values(SHIPPED_CONF, {"listen_tcp": True, "tcp_port": "16509", "auth_tcp": "none"})
    assert remove_values(applied, ["listen_tcp", "tcp_port", "auth_tcp", "listen_addr"]) == SHIPPED_CONF
    edited = "  listen_tcp = 0\nmax_clients = 10\nlisten_tcp=1 # again\n"
    assert remove_values(edited, ["listen_tcp"]) == "max_clients = 10\n"
    assert remove_values("listen_tcp = 1\n", ["listen_tcp"]) == ""


def test_absent_gives_back_the_shipped_files_and_starts_nothing(run_module, files):
    run_module(libvirt_tcp.main, args_for(files, restart=False), connection=False)
    assert files[0].read_text() != SHIPPED_CONF
    # A PID file naming a process that is not libvirtd: libvirtd counts as stopped.
    files[2].write_text("%d\n" % os.getpid())
    absent = {"config_file": str(files[0]), "defaults_file": str(files[1]), "pid_file": str(files[2]),
              "service_manager": "direct", "state": "absent"}
    checked = run_module(libvirt_tcp.main, dict(absent, _ansible_check_mode=True, _ansible_diff=True),
                         connection=False)
    assert checked["changed"] is True and checked["restarted"] is False
    assert [d["after_header"] for d in checked["diff"]] == [str(files[0]), str(files[1])]
    assert 'LIBVIRTD_ARGS="--listen"' in files[1].read_text().splitlines()

    removed = run_module(libvirt_tcp.main, absent, connection=False)
    assert removed["changed"] is True and removed["restarted"] is False
    assert "pid" not in removed
    assert files[0].read_text() == SHIPPED_CONF
    assert files[1].read_text() == SHIPPED_DEFAULTS
    again = run_module(libvirt_tcp.main, absent, connection=False)
    assert again["changed"] is False and again["changed_files"] == []


def test_absent_keeps_other_daemon_arguments(run_module, files):
    files[1].write_text(SHIPPED_DEFAULTS + 'LIBVIRTD_ARGS="--timeout 120 --listen"\n')
    result = run_module(libvirt_tcp.main, {"config_file": str(files[0]), "defaults_file": str(files[1]),
                                           "pid_file": str(files[2]), "service_manager": "direct",
                                           "state": "absent"}, connection=False)
    assert result["changed"] is True
    assert files[1].read_text() == SHIPPED_DEFAULTS + 'LIBVIRTD_ARGS="--timeout 120"\n'
    assert files[0].read_text() == SHIPPED_CONF


def test_absent_without_libvirt_installed_changes_nothing(run_module, tmp_path):
    result = run_module(libvirt_tcp.main, {"config_file": str(tmp_path / "libvirtd.conf"),
                                           "defaults_file": str(tmp_path / "libvirtd"),
                                           "pid_file": str(tmp_path / "libvirtd.pid"), "service_manager": "direct",
                                           "state": "absent"}, connection=False)
    assert result["changed"] is False and result["changed_files"] == []
    assert list(tmp_path.iterdir()) == []


def test_absent_refuses_settings_it_would_ignore(run_module, files):
    result = run_module(libvirt_tcp.main, args_for(files, state="absent", verify=True), connection=False)
    assert result["failed"] is True
    assert result["msg"] == ("state=absent removes the listen settings and cannot also set listen_tls, tcp_port, "
                             "listen_addr, auth_tcp, verify; drop them from the task")
    assert files[0].read_text() == SHIPPED_CONF
