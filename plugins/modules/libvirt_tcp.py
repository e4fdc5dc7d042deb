#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: libvirt_tcp
short_description: Make libvirtd accept TCP connections from the management engine and peers
description:
  - Sets C(listen_tcp), C(listen_tls), C(tcp_port), C(listen_addr) and C(auth_tcp) in C(libvirtd.conf),
    keeping comments, blank lines and every other setting where they are.
  - Configures how libvirtd is started to match. Under systemd (socket activation) it enables
    C(libvirtd-tcp.socket), masks or unmasks C(libvirtd-tls.socket), writes a drop-in with C(ListenStream)
    for a non-default address or port, and keeps C(--listen) out of C(LIBVIRTD_ARGS).
    Without systemd it puts C(--listen) into C(LIBVIRTD_ARGS) of the defaults file and restarts the
    running daemon through its PID file, with the same command line plus C(--listen).
  - Restarts libvirtd only when a file changed or the running daemon does not listen as configured.
    Running guests are not affected by a libvirtd restart.
  - With O(verify=true) it connects to C(qemu+tcp://ADDRESS:PORT/system) afterwards, through the libvirt
    Python binding when the target has it, else with C(virsh), and fails when that does not work.
  - With O(state=absent) it takes all of this back (see O(state)).
version_added: "0.1.0"
author:
  - Stackwright maintainers (@stackwright)
options:
  state:
    description:
      - V(present) makes libvirtd listen as the other options say.
      - V(absent) removes the active C(listen_tcp), C(listen_tls), C(tcp_port), C(listen_addr) and C(auth_tcp)
        lines from C(libvirtd.conf), so libvirt's defaults apply again and the shipped commented-out examples are
        all that is left of them; drops C(--listen) from C(LIBVIRTD_ARGS) (and the variable when nothing else is in
        it); under systemd removes the drop-in, stops and disables C(libvirtd-tcp.socket) and unmasks
        C(libvirtd-tls.socket). A running libvirtd is restarted without C(--listen); a stopped one stays stopped.
      - With V(absent), O(listen_tls), O(tcp_port), O(listen_addr), O(auth_tcp) and O(verify) must not be set and
        O(listen_tcp) is not used.
    type: str
    choices: [present, absent]
    default: present
  listen_tcp:
    description:
      - Whether libvirtd accepts unencrypted TCP connections.
    type: bool
    default: true
  listen_tls:
    description:
      - Whether libvirtd accepts TLS connections (it needs certificates). Left as it is when not set.
    type: bool
  tcp_port:
    description:
      - TCP port for O(listen_tcp). Left as it is when not set; libvirt's default is 16509.
    type: int
  listen_addr:
    description:
      - Address to listen on, for example C(0.0.0.0) or one address of the host. Left as it is when not set.
    type: str
  auth_tcp:
    description:
      - Authentication on the TCP socket. V(none) lets anyone who can reach the port manage the host,
        so limit O(listen_addr) or firewall the port. Left as it is when not set.
    type: str
    choices: [none, sasl, polkit]
  config_file:
    description:
      - The libvirtd configuration file to edit.
    type: path
    default: /etc/libvirt/libvirtd.conf
  defaults_file:
    description:
      - Shell variable file holding C(LIBVIRTD_ARGS), read by the init script or the systemd unit.
    type: path
    default: /etc/default/libvirtd
  service_manager:
    description:
      - How libvirtd is started on this host.
      - V(auto) picks V(systemd) when systemd runs the host (C(/run/systemd/system) exists), else V(direct).
      - V(direct) manages the daemon through O(pid_file) and starts it when it is not running.
    type: str
    choices: [auto, systemd, direct]
    default: auto
  pid_file:
    description:
      - PID file of the running libvirtd, used by O(service_manager=direct).
    type: path
    default: /run/libvirtd.pid
  systemd_dir:
    description:
      - Directory for the socket unit drop-in, used by O(service_manager=systemd).
    type: path
    default: /etc/systemd/system
  restart:
    description:
      - Whether to restart libvirtd when something changed. With V(false) the changes apply at the next start.
    type: bool
    default: true
  verify:
    description:
      - Whether to connect to libvirtd over TCP after the change.
    type: bool
    default: false
  verify_address:
    description:
      - Address to connect to for O(verify). Defaults to O(listen_addr) when it names one address, else C(127.0.0.1).
    type: str
  timeout:
    description:
      - Seconds to wait for libvirtd to stop, to start and to answer O(verify).
    type: int
    default: 30
notes:
  - Needs root. O(verify) needs C(virsh) (libvirt-clients) or the libvirt Python binding on the target.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
"""

EXAMPLES = r"""
- name: Let the management engine reach libvirtd on the host's management address
  stackwright.cloudstack.libvirt_tcp:
    listen_tcp: true
    listen_tls: false
    tcp_port: 16509
    listen_addr: 0.0.0.0
    auth_tcp: none
    verify: true

- name: Listen on loopback only, on a custom port
  stackwright.cloudstack.libvirt_tcp:
    listen_addr: 127.0.0.1
    tcp_port: 16599
    auth_tcp: sasl

- name: Stop listening on TCP and go back to libvirt's defaults
  stackwright.cloudstack.libvirt_tcp:
    state: absent
"""

RETURN = r"""
service_manager:
  description: How libvirtd was managed.
  returned: always
  type: str
  sample: direct
restarted:
  description: Whether libvirtd was (or, in check mode, would be) restarted or started (never started with O(state=absent)).
  returned: always
  type: bool
  sample: true
pid:
  description: PID of libvirtd after the run, when O(service_manager=direct) and it runs.
  returned: when known
  type: int
  sample: 4711
uri:
  description: The URI that O(verify) connected to.
  returned: when O(verify=true)
  type: str
  sample: qemu+tcp://127.0.0.1:16509/system
version:
  description: Hypervisor version libvirtd reported over TCP.
  returned: when O(verify=true)
  type: str
  sample: "7002022"
changed_files:
  description: Files that were (or would be) written.
  returned: always
  type: list
  elements: str
"""

import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.stackwright.cloudstack.plugins.module_utils.host_files import read_text, write_atomically
from ansible_collections.stackwright.cloudstack.plugins.module_utils.libvirtd_conf import (
    LIBVIRT,
    SHELL,
    ConfError,
    current_values,
    remove_values,
    set_values,
    shell_words,
)

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    listen_tcp=dict(type="bool", default=True),
    listen_tls=dict(type="bool"),
    tcp_port=dict(type="int"),
    listen_addr=dict(type="str"),
    auth_tcp=dict(type="str", choices=["none", "sasl", "polkit"]),
    config_file=dict(type="path", default="/etc/libvirt/libvirtd.conf"),
    defaults_file=dict(type="path", default="/etc/default/libvirtd"),
    service_manager=dict(type="str", choices=["auto", "systemd", "direct"], default="auto"),
    pid_file=dict(type="path", default="/run/libvirtd.pid"),
    systemd_dir=dict(type="path", default="/etc/systemd/system"),
    restart=dict(type="bool", default=True),
    verify=dict(type="bool", default=False),
    verify_address=dict(type="str"),
    timeout=dict(type="int", default=30),
)

DEFAULT_TCP_PORT = 16509
CONF_KEYS = ("listen_tls", "listen_tcp", "tcp_port", "listen_addr", "auth_tcp")
# What state=absent refuses, because it would have to ignore it.
PRESENT_ONLY = ("listen_tls", "tcp_port", "listen_addr", "auth_tcp")
LISTEN_FLAGS = ("--listen", "-l")
DAEMON_FLAGS = ("--daemon", "-d")
TCP_SOCKET = "libvirtd-tcp.socket"
TLS_SOCKET = "libvirtd-tls.socket"
DROP_IN = "60-stackwright-listen.conf"
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


class LibvirtTcpError(Exception):
    """A failure the module explains: what went wrong and where to look."""


class LibvirtTcp(object):

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.writes = []          # (path, content or None to delete)
        self.diffs = []
        self.restarted = False
        self.absent = self.params["state"] == "absent"

    # -- wanted state ------------------------------------------------------------------

    def conf_settings(self):
        port = self.params["tcp_port"]
        if port is not None and not 1 <= port <= 65535:
            raise LibvirtTcpError("tcp_port %s is not a TCP port number: use 1 to 65535" % port)
        return {
            "listen_tls": self.params["listen_tls"],
            "listen_tcp": self.params["listen_tcp"],
            "tcp_port": str(port) if port is not None else None,
            "listen_addr": self.params["listen_addr"],
            "auth_tcp": self.params["auth_tcp"],
        }

    def check_absent(self):
        given = [name for name in PRESENT_ONLY if self.params[name] is not None]
        if self.params["verify"]:
            given.append("verify")
        if given:
            raise LibvirtTcpError("state=absent removes the listen settings and cannot also set %s; drop %s from "
                                  "the task" % (", ".join(given), "it" if len(given) == 1 else "them"))

    def effective(self, conf_text):
        """What libvirtd will do with the new file: listen flags, address and port."""
        values = current_values(conf_text, ["listen_tcp", "listen_tls", "tcp_port", "listen_addr"])
        return {
            "listen_tcp": values.get("listen_tcp", "0") not in ("0", ""),
            # libvirtd listens for TLS by default whenever it listens at all, which
            # without --listen (state=absent) it does not.
            "listen_tls": not self.absent and values.get("listen_tls", "1") not in ("0", ""),
            "tcp_port": int(values.get("tcp_port") or DEFAULT_TCP_PORT),
            "listen_addr": values.get("listen_addr", ""),
        }

    def plan_file(self, path, new_text):
        old_text = read_text(path)
        if old_text == new_text:
            return False
        self.writes.append((path, new_text))
        self.diffs.append({
            "before_header": path, "after_header": path,
            "before": old_text or "", "after": new_text or "",
        })
        return True

    def plan_defaults(self, want_listen):
        path = self.params["defaults_file"]
        text = read_text(path) or ""
        words = shell_words(current_values(text, ["LIBVIRTD_ARGS"], SHELL).get("LIBVIRTD_ARGS"))
        kept = [w for w in words if w not in LISTEN_FLAGS]
        wanted = kept + ["--listen"] if want_listen else kept
        if wanted == words:
            return False
        if self.absent and not wanted:
            # Unset is the same as empty, and gives back the file as shipped.
            return self.plan_file(path, remove_values(text, ["LIBVIRTD_ARGS"], SHELL))
        return self.plan_file(path, set_values(text, {"LIBVIRTD_ARGS": " ".join(wanted)}, SHELL))

    # -- file writes -------------------------------------------------------------------

    def write_planned(self):
        for path, content in self.writes:
            if content is None:
                if os.path.exists(path):
                    os.unlink(path)
            else:
                write_atomically(self.module, path, content)

    # -- direct: pid file and the daemon's own command line -----------------------------

    def running_pid(self):
        text = read_text(self.params["pid_file"])
        try:
            pid = int((text or "").strip())
        except ValueError:
            return None
        comm = read_text("/proc/%d/comm" % pid)
        return pid if comm and comm.strip() == "libvirtd" else None

    def direct(self, files_changed, effective):
        pid = self.running_pid()
        want_listen = effective["listen_tcp"] or effective["listen_tls"]
        if pid is None and self.absent:
            # The settings apply whenever it is started next.
            return None
        if pid is None:
            needs = True
        else:
            argv = _proc_argv(pid)
            has_listen = any(a in LISTEN_FLAGS for a in argv)
            needs = files_changed or has_listen != want_listen
        if not needs or not self.params["restart"]:
            return pid
        self.restarted = True
        if self.module.check_mode:
            return pid
        if pid is None:
            argv, environ, cwd = self.default_command(), None, "/"
        else:
            argv, environ, cwd = _proc_argv(pid), _proc_environ(pid), _proc_cwd(pid)
            self.stop(pid)
        argv = [a for a in argv if a not in LISTEN_FLAGS]
        if want_listen:
            argv.append("--listen")
        if not any(a in DAEMON_FLAGS for a in argv):
            # Detached, so the new daemon outlives this module.
            argv.append("--daemon")
        return self.start(argv, environ, cwd)

    def default_command(self):
        argv = [self.module.get_bin_path("libvirtd", required=True, opt_dirs=["/usr/sbin", "/sbin"])]
        if self.params["config_file"] != ARGUMENT_SPEC["config_file"]["default"]:
            argv += ["--config", self.params["config_file"]]
        if self.params["pid_file"] != ARGUMENT_SPEC["pid_file"]["default"]:
            argv += ["--pid-file", self.params["pid_file"]]
        return argv

    def stop(self, pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + self.params["timeout"]
        while time.time() < deadline:
            if not os.path.exists("/proc/%d" % pid) or _is_zombie(pid):
                return
            time.sleep(0.1)
        raise LibvirtTcpError("libvirtd (pid %d) did not stop within %d seconds of SIGTERM; look at what it is "
                              "waiting for, then run again" % (pid, self.params["timeout"]))

    def start(self, argv, environ, cwd):
        # libvirtd --daemon returns once the daemon finished starting or failed to.
        rc, out, err = self.module.run_command(argv, environ_update=environ, cwd=cwd)
        if rc != 0:
            raise LibvirtTcpError("libvirtd did not start again (%s, exit %d): %s; the configuration is in %s"
                                  % (" ".join(argv), rc, (err or out).strip() or "no output", self.params["config_file"]))
        deadline = time.time() + self.params["timeout"]
        while time.time() < deadline:
            pid = self.running_pid()
            if pid is not None:
                return pid
            time.sleep(0.1)
        raise LibvirtTcpError("libvirtd started but wrote no live PID to %s within %d seconds"
                              % (self.params["pid_file"], self.params["timeout"]))

    # -- systemd: socket units ------------------------------------------------------------

    def systemctl(self, *args, **kwargs):
        binary = self.module.get_bin_path("systemctl", required=True)
        rc, out, err = self.module.run_command([binary] + list(args))
        if rc != 0 and kwargs.get("check", True):
            raise LibvirtTcpError("systemctl %s failed: %s" % (" ".join(args), (err or out).strip()))
        return rc, out.strip()

    def plan_drop_in(self, effective):
        path = os.path.join(self.params["systemd_dir"], TCP_SOCKET + ".d", DROP_IN)
        address, port = effective["listen_addr"], effective["tcp_port"]
        if address in _WILDCARDS and port == DEFAULT_TCP_PORT:
            return self._plan_removal(path)
        stream = "%s:%d" % (_bracket(address), port) if address not in _WILDCARDS else str(port)
        text = ("# Managed by stackwright.cloudstack.libvirt_tcp\n[Socket]\n"
                "# An empty ListenStream= drops the unit's default before adding ours.\n"
                "ListenStream=\nListenStream=%s\n" % stream)
        return self.plan_file(path, text)

    def _plan_removal(self, path):
        if not os.path.exists(path):
            return False
        self.writes.append((path, None))
        self.diffs.append({"before_header": path, "after_header": path, "before": read_text(path) or "", "after": ""})
        return True

    def socket_actions(self, effective):
        """systemctl commands that bring the socket units to the wanted state."""
        actions = []
        tcp_enabled = self.systemctl("is-enabled", TCP_SOCKET, check=False)[1]
        if effective["listen_tcp"] and tcp_enabled != "enabled":
            actions.append(("enable", TCP_SOCKET))
        if not effective["listen_tcp"] and tcp_enabled == "enabled":
            # Disabling alone would leave the socket listening until the next boot.
            actions += [("stop", TCP_SOCKET), ("disable", TCP_SOCKET)]
        tls_enabled = self.systemctl("is-enabled", TLS_SOCKET, check=False)[1]
        if self.absent:
            if tls_enabled == "masked":
                actions.append(("unmask", TLS_SOCKET))
        elif effective["listen_tls"]:
            if tls_enabled == "masked":
                actions.append(("unmask", TLS_SOCKET))
            if tls_enabled != "enabled":
                actions.append(("enable", TLS_SOCKET))
        elif tls_enabled != "masked":
            actions += [("stop", TLS_SOCKET), ("mask", TLS_SOCKET)]
        return actions

    def systemd(self, files_changed, effective):
        actions = self.socket_actions(effective)
        if not (files_changed or actions):
            return
        if self.absent:
            # Socket activation starts a stopped libvirtd on demand; only a running one is restarted.
            self.restarted = (self.params["restart"]
                              and self.systemctl("is-active", "libvirtd.service", check=False)[1] == "active")
        else:
            self.restarted = self.params["restart"]
        if self.module.check_mode:
            return
        for action in actions:
            self.systemctl(*action)
        self.systemctl("daemon-reload")
        if self.absent:
            if self.restarted:
                self.systemctl("restart", "libvirtd.service")
            return
        if self.params["restart"]:
            # A socket unit takes new ListenStream values only while its service is stopped.
            self.systemctl("stop", "libvirtd.service")
            for unit, wanted in ((TCP_SOCKET, effective["listen_tcp"]), (TLS_SOCKET, effective["listen_tls"])):
                if wanted:
                    self.systemctl("restart", unit)
            self.systemctl("start", "libvirtd.service")

    # -- verification ------------------------------------------------------------------

    def verify(self, effective):
        address = self.params["verify_address"] or effective["listen_addr"]
        if address in _WILDCARDS:
            address = "127.0.0.1"
        uri = "qemu+tcp://%s:%d/system" % (_bracket(address), effective["tcp_port"])
        deadline = time.time() + self.params["timeout"]
        while True:
            try:
                return uri, self._connect(uri)
            except LibvirtTcpError as exc:
                if time.time() >= deadline:
                    raise LibvirtTcpError("could not connect to %s within %d seconds: %s; check listen_addr, "
                                          "tcp_port, auth_tcp and that nothing blocks the port"
                                          % (uri, self.params["timeout"], exc)) from exc
                time.sleep(0.5)

    def _connect(self, uri):
        try:
            import libvirt
        except ImportError:
            libvirt = None
        if libvirt is not None:
            try:
                connection = libvirt.open(uri)
                try:
                    return str(connection.getVersion())
                finally:
                    connection.close()
            except libvirt.libvirtError as exc:
                raise LibvirtTcpError(to_native(exc)) from exc
        virsh = self.module.get_bin_path("virsh")
        if not virsh:
            raise LibvirtTcpError("verify needs the libvirt Python binding or virsh (libvirt-clients) on the host")
        rc, out, err = self.module.run_command([virsh, "-c", uri, "version"], environ_update={"LANG": "C"})
        if rc != 0:
            raise LibvirtTcpError((err or out).strip())
        for line in out.splitlines():
            if line.startswith("Running hypervisor"):
                return line.split(":", 1)[1].strip()
        return out.strip()

    # -- the one flow ------------------------------------------------------------------

    def service_manager(self):
        choice = self.params["service_manager"]
        if choice == "auto":
            return "systemd" if os.path.isdir("/run/systemd/system") else "direct"
        return choice

    def run(self):
        try:
            self.apply()
        except (LibvirtTcpError, ConfError) as exc:
            self.module.fail_json(msg=str(exc))
        except (IOError, OSError) as exc:
            self.module.fail_json(msg="libvirt_tcp: %s" % exc)

    def apply(self):
        manager = self.service_manager()
        config_file = self.params["config_file"]
        conf_text = read_text(config_file)
        if self.absent:
            self.check_absent()
            # Without the file there is nothing of ours in it to take out.
            new_conf = remove_values(conf_text, CONF_KEYS, LIBVIRT) if conf_text is not None else None
        elif conf_text is None:
            raise LibvirtTcpError("%s does not exist; install libvirt-daemon-system (or point config_file at the "
                                  "libvirtd configuration)" % config_file)
        else:
            new_conf = set_values(conf_text, self.conf_settings(), LIBVIRT)
        effective = self.effective(new_conf or "")
        changed = new_conf is not None and self.plan_file(config_file, new_conf)
        if manager == "systemd":
            # Socket activation refuses --listen.
            changed = self.plan_defaults(False) | changed
            changed = self.plan_drop_in(effective) | changed
        else:
            changed = self.plan_defaults(effective["listen_tcp"] or effective["listen_tls"]) | changed
        if not self.module.check_mode:
            self.write_planned()
        pid = None
        if manager == "systemd":
            self.systemd(changed, effective)
        else:
            pid = self.direct(changed, effective)
        result = dict(
            changed=changed or self.restarted,
            service_manager=manager,
            restarted=self.restarted,
            changed_files=[w[0] for w in self.writes],
            diff=self.diffs,
        )
        if pid is not None:
            result["pid"] = pid
        if self.params["verify"] and not self.module.check_mode:
            result["uri"], result["version"] = self.verify(effective)
        self.module.exit_json(**result)


def _bracket(address):
    return "[%s]" % address if ":" in address and not address.startswith("[") else address


def _proc_argv(pid):
    raw = read_text("/proc/%d/cmdline" % pid) or ""
    return [arg for arg in raw.split("\0") if arg]


def _proc_environ(pid):
    raw = read_text("/proc/%d/environ" % pid) or ""
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _proc_cwd(pid):
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return "/"


def _is_zombie(pid):
    stat = read_text("/proc/%d/stat" % pid) or ""
    return ") Z " in stat


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    LibvirtTcp(module).run()


if __name__ == "__main__":
    main()
