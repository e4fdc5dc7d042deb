#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_agent
short_description: Configure the host agent of a KVM host and enroll it with the management engine
description:
  - Writes C(agent.properties) of C(stackwright-agent), the role C(cloudstack-setup-agent) plays for
    Apache CloudStack's agent. Keys the module sets are changed in place; comments, blank lines, order
    and every other key stay as they are. The file is replaced atomically and only when its content or mode
    changes; it is C(0600) when it holds a secret-looking key (C(*pass*), C(*secret*), C(*token*)).
  - Enrolls the host when it holds no valid certificate yet, that is when the key, the certificate or the
    CA certificate is missing or unreadable, the key does not match the certificate, the certificate was not
    issued by that CA, has expired, or was issued to another guid.
  - To enroll, the module asks the engine for a one-time token bound to the host's guid
    (C(createAgentEnrollmentToken), through the connection options) unless O(enrollment_token) is given,
    and runs C(stackwright-setup-agent) with the token in a private temporary file. The new
    C(agent.properties) is put in place only after the enrollment succeeded, so a failed run leaves the
    host as it was.
  - The module does not restart the agent; RV(restart_required) says when the running agent must be
    restarted to use the new settings or certificate.
version_added: "0.1.0"
author: Stackwright maintainers (@stackwright)
options:
  properties_file:
    description:
      - Path of C(agent.properties).
      - When it lies outside C(/etc/cloudstack/agent), the key and certificates go beside it unless
        O(tls_key_file), O(tls_cert_file), O(tls_ca_file) or the file itself say otherwise.
    type: path
    default: /etc/cloudstack/agent/agent.properties
  management_hosts:
    description:
      - Addresses of the management engines (C(host)), each V(HOST) or V(HOST:PORT), or the address of
        the load balancer in front of them; the agent tries them in the order of O(lb_algorithm) and
        moves to the next when its engine goes away.
      - Required when the file does not name any yet.
    type: list
    elements: str
  lb_algorithm:
    description:
      - Order in which the agent tries O(management_hosts) (C(indirect.agent.lb.algorithm)).
      - V(static) as listed, V(roundrobin) starting at an engine chosen by the host's guid (agents spread
        evenly), V(shuffle) at random. Left as it is when not set (the agent's default is V(static)).
    type: str
    choices: [static, roundrobin, shuffle]
  lb_check_interval:
    description:
      - Seconds between the agent's looks whether its preferred (first) engine is back while it is
        connected to another one; it then returns to it (C(indirect.agent.lb.check.interval)). V(0)
        never. Left as it is when not set.
    type: int
  port:
    description: Agent port of the engine (C(port)).
    type: int
    default: 8250
  zone:
    description: Zone of the host, name or UUID (C(zone)). Left as it is when not set.
    type: str
  pod:
    description: Pod of the host, name or UUID (C(pod)). Left as it is when not set.
    type: str
  cluster:
    description: Cluster of the host, name or UUID (C(cluster)). Left as it is when not set.
    type: str
  guid:
    description:
      - Identity of the host (C(guid)); the certificate is issued to it.
      - When not set the guid in the file is kept; a file without one gets a guid derived from the host's
        machine id and O(properties_file), so running the module again after the file was lost gives the
        same guid.
      - Changing the guid of an enrolled host enrolls it again.
    type: str
  private_network_device:
    description: Bridge carrying management traffic, for example C(cloudbr0) (C(private.network.device)).
    type: str
  public_network_device:
    description: Bridge for public traffic (C(public.network.device)).
    type: str
  guest_network_device:
    description: Bridge for guest traffic (C(guest.network.device)).
    type: str
  hypervisor_driver:
    description: Hypervisor driver of the agent (C(hypervisor.driver)).
    type: str
    choices: [libvirt, simulator]
  libvirt_uri:
    description: libvirt connection of the agent (C(libvirt.uri)), for example C(qemu:///system).
    type: str
  workers:
    description: Commands the agent executes in parallel (C(workers)), 1 to 256.
    type: int
  tls:
    description:
      - Whether the agent talks TLS to the engine (C(tls.enabled)). V(false) is only for a network you trust
        completely, and then the host is not enrolled.
    type: bool
  tls_key_file:
    description: The agent's private key (C(tls.key.file)).
    type: path
  tls_cert_file:
    description: The agent's certificate (C(tls.cert.file)).
    type: path
  tls_ca_file:
    description: The engine's CA certificate (C(tls.ca.file)).
    type: path
  storage_mode:
    description: How NFS primary storage is attached when the engine leaves it to the host (C(storage.mode)).
    type: str
    choices: [auto, kernel, userspace]
  storage_mount_dir:
    description: Where kernel NFS mounts go (C(storage.mount.dir)).
    type: path
  extra_properties:
    description:
      - Other keys to set, as a mapping of key to value. Keys the module has an option for must be set
        through that option.
    type: dict
    default: {}
  enroll:
    description:
      - Whether to enroll the host when it holds no valid certificate. With V(false) the module only writes
        the file.
    type: bool
    default: true
  force_enroll:
    description: Enroll again even when the host holds a valid certificate, for example to renew it.
    type: bool
    default: false
  enrollment_token:
    description:
      - One-time token printed by the engine (C(createAgentEnrollmentToken)). When not set, the module asks
        the engine for one through the connection options.
      - Its CA fingerprint is also checked against the CA certificate the host holds.
    type: str
  enrollment_token_ttl:
    description: Seconds the token the module asks for stays valid, 60 to 604800.
    type: int
    default: 600
  enrollment_timeout:
    description: Seconds C(stackwright-setup-agent) waits for the engine's agent port.
    type: int
    default: 30
  setup_agent_command:
    description:
      - Path of C(stackwright-setup-agent).
      - Defaults to the one in E(PATH), beside the Python interpreter running the module, or in
        C(/opt/stackwright/venv/bin).
    type: path
notes:
  - The connection options are only used to ask for an enrollment token.
  - The token is never logged nor returned.
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Configure the agent and enroll the host (the token comes from the engine)
  stackwright.cloudstack.cs_agent:
    api_url: http://10.0.0.10:8080/client/api
    api_key: "{{ cs_api_key }}"
    api_secret: "{{ cs_api_secret }}"
    management_hosts: [10.0.0.10]
    zone: zone1
    pod: pod1
    cluster: cluster1
    private_network_device: cloudbr0
    guest_network_device: cloudbr1
  register: agent

- name: Restart the agent when its configuration or certificate changed
  ansible.builtin.command: /usr/local/sbin/restart-stackwright-agent
  when: agent.restart_required

- name: Enroll with a token handed over by the operator
  stackwright.cloudstack.cs_agent:
    management_hosts: [10.0.0.10, 10.0.0.11]
    lb_algorithm: roundrobin
    lb_check_interval: 60
    enrollment_token: "{{ agent_token }}"

- name: Only write the file, with the certificates in a directory of their own
  stackwright.cloudstack.cs_agent:
    properties_file: /srv/agent/agent.properties
    management_hosts: [10.0.0.10]
    tls_key_file: /srv/agent/pki/cloud.key
    tls_cert_file: /srv/agent/pki/cloud.crt
    tls_ca_file: /srv/agent/pki/cloud.ca.crt
    storage_mode: userspace
    enroll: false
"""

RETURN = r"""
guid:
  description: The host's guid after the run.
  returned: success
  type: str
  sample: 7d0f5c56-3f2a-5a43-9d51-5b0c6e2f0a11
enrolled:
  description: Whether the host was (in check mode, would be) enrolled by this run.
  returned: success
  type: bool
restart_required:
  description: Whether the properties or the certificates changed, so a running agent must be restarted.
  returned: success
  type: bool
properties_file:
  description: Path of the agent.properties file.
  returned: success
  type: str
  sample: /etc/cloudstack/agent/agent.properties
enrollment_reason:
  description: Why the host was (or would be) enrolled.
  returned: when RV(enrolled) is true
  type: str
  sample: agent certificate /etc/cloudstack/agent/cloud.crt is missing
diff:
  description: The file's content before and after (values of secret-looking keys are masked).
  returned: success
  type: dict
"""

import hashlib
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import uuid

from ansible_collections.stackwright.cloudstack.plugins.module_utils import agent_properties as props
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import CloudStackError
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    CloudStackModule,
    ResourceError,
)
from ansible_collections.stackwright.cloudstack.plugins.module_utils.host_files import read_text

DEFAULT_DIR = "/etc/cloudstack/agent"
SETUP_AGENT = "stackwright-setup-agent"
SETUP_AGENT_DIRS = ["/opt/stackwright/venv/bin"]
# Namespace of the guids the module derives from the machine id.
GUID_NAMESPACE = uuid.UUID("5b6f1d3e-2c4a-4f0e-9a8b-7c6d5e4f3a21")
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
TLS_FILES = (("tls_key_file", "tls.key.file", "cloud.key"), ("tls_cert_file", "tls.cert.file", "cloud.crt"),
             ("tls_ca_file", "tls.ca.file", "cloud.ca.crt"))
# option -> agent.properties key, for options written as they are.
KEYS = {
    "zone": "zone",
    "pod": "pod",
    "cluster": "cluster",
    "private_network_device": "private.network.device",
    "public_network_device": "public.network.device",
    "guest_network_device": "guest.network.device",
    "hypervisor_driver": "hypervisor.driver",
    "libvirt_uri": "libvirt.uri",
    "workers": "workers",
    "storage_mode": "storage.mode",
    "storage_mount_dir": "storage.mount.dir",
    "lb_algorithm": "indirect.agent.lb.algorithm",
    "lb_check_interval": "indirect.agent.lb.check.interval",
}
OWN_KEYS = set(KEYS.values()) | set(entry[1] for entry in TLS_FILES) | {"host", "port", "guid", "tls.enabled"}

ARGUMENT_SPEC = dict(
    properties_file=dict(type="path", default=DEFAULT_DIR + "/agent.properties"),
    management_hosts=dict(type="list", elements="str"),
    lb_algorithm=dict(type="str", choices=["static", "roundrobin", "shuffle"]),
    lb_check_interval=dict(type="int"),
    port=dict(type="int", default=8250),
    zone=dict(type="str"),
    pod=dict(type="str"),
    cluster=dict(type="str"),
    guid=dict(type="str"),
    private_network_device=dict(type="str"),
    public_network_device=dict(type="str"),
    guest_network_device=dict(type="str"),
    hypervisor_driver=dict(type="str", choices=["libvirt", "simulator"]),
    libvirt_uri=dict(type="str"),
    workers=dict(type="int"),
    tls=dict(type="bool"),
    tls_key_file=dict(type="path"),
    tls_cert_file=dict(type="path"),
    tls_ca_file=dict(type="path"),
    storage_mode=dict(type="str", choices=["auto", "kernel", "userspace"]),
    storage_mount_dir=dict(type="path"),
    extra_properties=dict(type="dict", default={}),
    enroll=dict(type="bool", default=True),
    force_enroll=dict(type="bool", default=False),
    enrollment_token=dict(type="str", no_log=True),
    enrollment_token_ttl=dict(type="int", default=600, no_log=False),
    enrollment_timeout=dict(type="int", default=30),
    setup_agent_command=dict(type="path"),
)


def stable_guid(properties_file):
    """A guid that the same host and file always get: machine id (or host name) and path."""
    seed = None
    for path in MACHINE_ID_FILES:
        seed = (read_text(path) or "").strip()
        if seed:
            break
    seed = seed or socket.getfqdn()
    return str(uuid.uuid5(GUID_NAMESPACE, "%s:%s" % (seed, os.path.abspath(properties_file))))


def ca_fingerprint(ca_file):
    """SHA-256 of the CA certificate's DER form, as enrollment tokens carry it."""
    with open(ca_file) as handle:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(handle.read())).hexdigest()


def certificate_problem(key_file, cert_file, ca_file, guid, expected_ca=None):
    """Why the host's TLS files do not make a valid identity for `guid` (None when they do).

    The check is a TLS handshake in memory in which the agent's own certificate is
    verified against the CA file: OpenSSL then checks the key, the issuer, the
    validity period and the purpose exactly as the engine will.
    """
    for label, path in (("key", key_file), ("certificate", cert_file), ("CA certificate", ca_file)):
        if not os.path.isfile(path):
            return "agent %s %s is missing" % (label, path)
        if not os.access(path, os.R_OK):
            return "agent %s %s is not readable" % (label, path)
    try:
        if expected_ca and ca_fingerprint(ca_file) != expected_ca:
            return "CA certificate %s is not the CA of the enrollment token" % ca_file
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
        server.load_verify_locations(ca_file)
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.load_cert_chain(cert_file, key_file)
        peer = _handshake_in_memory(server, client)
    except (ssl.SSLError, ValueError, OSError) as exc:
        detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return "agent certificate %s does not hold up against %s: %s" % (cert_file, ca_file, detail)
    subject = dict(item for rdn in peer.get("subject", ()) for item in rdn)
    if subject.get("commonName") != guid:
        return "agent certificate %s was issued to guid %s, not %s" % (cert_file, subject.get("commonName"), guid)
    return None


def _handshake_in_memory(server_context, client_context):
    """Run a TLS handshake between two contexts over memory buffers; the server's view of the client."""
    client_in, client_out, server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context.wrap_bio(client_in, client_out, server_side=False)
    pending = {"client": (client, client_out, server_in), "server": (server, server_out, client_in)}
    for _round in range(8):  # a TLS 1.3 handshake takes three
        for name, (side, outbox, peer_inbox) in list(pending.items()):
            try:
                side.do_handshake()
                del pending[name]
            except ssl.SSLWantReadError:
                pass
            finally:
                peer_inbox.write(outbox.read())
        if not pending:
            return server.getpeercert()
    raise ssl.SSLError("the TLS handshake did not complete")


class Agent(CloudStackModule):

    def execute(self):
        p = self.params
        path = p["properties_file"]
        self.check_input()
        if os.path.exists(path) and not os.path.isfile(path):
            raise ResourceError("properties_file %s is not a regular file" % path)
        before = read_text(path)
        if before is None and os.path.exists(path):
            raise ResourceError("cannot read %s; run as root or fix its permissions" % path)
        current = props.read_values(before)
        guid = p["guid"] or current.get("guid") or stable_guid(path)
        after = props.set_values(before, self.wanted(current, guid))
        values = props.read_values(after)
        if not values.get("host", "").strip():
            raise ResourceError("%s names no management engine; set management_hosts" % path)
        mode = self.file_mode(path, after)
        properties_changed = after != before or (before is not None and _mode_of(path) != mode)

        reason = self.enrollment_reason(values, guid)
        enrolled = reason is not None
        if enrolled and not self.module.check_mode:
            self.enroll_with(path, after, mode, values)
        elif properties_changed and not self.module.check_mode:
            self.write(path, after, mode)
        result = dict(
            changed=properties_changed or enrolled,
            guid=guid,
            enrolled=enrolled,
            restart_required=properties_changed or enrolled,
            properties_file=path,
            diff=dict(before_header=path, after_header=path,
                      before=props.masked(before), after=props.masked(after)),
        )
        if enrolled:
            result["enrollment_reason"] = reason
        return result

    # -- the file -------------------------------------------------------------------

    def check_input(self):
        p = self.params
        if not 1 <= p["port"] <= 65535:
            raise ResourceError("port %d is not a TCP port; use 1 to 65535" % p["port"])
        if p["lb_check_interval"] is not None and not 0 <= p["lb_check_interval"] <= 86400:
            raise ResourceError("lb_check_interval %d is out of range; use 0 to 86400 seconds" % p["lb_check_interval"])
        if p["workers"] is not None and not 1 <= p["workers"] <= 256:
            raise ResourceError("workers %d is out of range; use 1 to 256" % p["workers"])
        if not 60 <= p["enrollment_token_ttl"] <= 604800:
            raise ResourceError("enrollment_token_ttl must be between 60 and 604800 seconds")
        hosts = p["management_hosts"]
        if hosts is not None and (not hosts or any(not h.strip() or "," in h or " " in h.strip() for h in hosts)):
            raise ResourceError("management_hosts must list one or more addresses, one per item, got %s" % hosts)
        for key, value in p["extra_properties"].items():
            if props.SECRET_KEY.search(key) and value:
                # Like a no_log option: masked wherever it would be shown.
                self.module.no_log_values.add(str(value))
            if not key.strip() or key in OWN_KEYS:
                raise ResourceError("extra_properties: %r cannot be set there; %s" % (
                    key, "use its own option" if key in OWN_KEYS else "keys must not be empty"))

    def wanted(self, current, guid):
        """{key: value} of what this run sets."""
        p = self.params
        values = {}
        if p["management_hosts"] is not None:
            values["host"] = ",".join(h.strip() for h in p["management_hosts"])
        values.update(port=str(p["port"]), guid=guid)
        for option, key in KEYS.items():
            if p[option] is not None:
                values[key] = str(p[option])
        if p["tls"] is not None:
            values["tls.enabled"] = "true" if p["tls"] else "false"
        beside = os.path.dirname(os.path.abspath(p["properties_file"])) != DEFAULT_DIR
        for option, key, name in TLS_FILES:
            if p[option]:
                values[key] = p[option]
            elif beside and key not in current:
                # What stackwright-setup-agent does for a file outside the default
                # directory; doing it here keeps the diff complete.
                values[key] = os.path.join(os.path.dirname(os.path.abspath(p["properties_file"])), name)
        for key, value in p["extra_properties"].items():
            values[key] = "" if value is None else str(value)
        return values

    @staticmethod
    def file_mode(path, text):
        if props.holds_secrets(text):
            return 0o600
        return _mode_of(path) or 0o644

    def write(self, path, text, mode):
        self.replace(self.temp_beside(path, text, mode), path, mode)

    def replace(self, temp, path, mode):
        self.module.atomic_move(temp, path)
        # atomic_move gives the new file the mode of the one it replaces.
        os.chmod(path, mode)

    def temp_beside(self, path, text, mode):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
        self.module.add_cleanup_file(temp)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, mode)
        return temp

    # -- enrollment -----------------------------------------------------------------

    def enrollment_reason(self, values, guid):
        """Why this run enrolls the host, or None when it does not."""
        p = self.params
        if not p["enroll"] or values.get("tls.enabled", "true").strip().lower() in ("false", "no", "0", "off"):
            return None
        if p["force_enroll"]:
            return "force_enroll is set"
        files = [values.get(entry[1]) or os.path.join(DEFAULT_DIR, entry[2]) for entry in TLS_FILES]
        expected_ca = self.token_fingerprint(p["enrollment_token"]) if p["enrollment_token"] else None
        return certificate_problem(files[0], files[1], files[2], guid, expected_ca)

    @staticmethod
    def token_fingerprint(token):
        fingerprint = token.strip().rpartition(".")[2]
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise ResourceError("enrollment_token is malformed: expected <secret>.<64 hex digits of the CA "
                                "fingerprint>; copy it again from the engine")
        return fingerprint

    def issue_token(self, guid):
        try:
            client = self.client
        except CloudStackError as exc:
            raise ResourceError("the host needs an enrollment token: set enrollment_token, or the connection options "
                                "so the module can ask the engine for one (%s)" % exc) from None
        answer = client.request("createAgentEnrollmentToken", guid=guid, ttl=self.params["enrollment_token_ttl"],
                                description="cs_agent on %s" % socket.gethostname())
        token = (answer.get("agentenrollmenttoken") or {}).get("token")
        if not token:
            raise ResourceError("createAgentEnrollmentToken answered without a token: %s" % sorted(answer))
        self.module.no_log_values.add(token)
        return token

    def setup_agent_command(self):
        configured = self.params["setup_agent_command"]
        if configured:
            if not os.access(configured, os.X_OK):
                raise ResourceError("setup_agent_command %s is not an executable file" % configured)
            return configured
        found = self.module.get_bin_path(SETUP_AGENT, opt_dirs=[os.path.dirname(sys.executable)] + SETUP_AGENT_DIRS)
        if not found:
            raise ResourceError("%s not found in PATH, beside %s or in %s; install the stackwright agent or set "
                                "setup_agent_command" % (SETUP_AGENT, sys.executable, ", ".join(SETUP_AGENT_DIRS)))
        return found

    def enroll_with(self, path, text, mode, values):
        """Enroll against a copy of the new file; put it in place only when enrollment worked."""
        command = self.setup_agent_command()
        token = self.params["enrollment_token"] or self.issue_token(values["guid"])
        temp = self.temp_beside(path, text, mode)
        private = tempfile.mkdtemp(prefix="cs_agent.")
        try:
            token_file = os.path.join(private, "token")
            with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(token)
            rc, out, err = self.module.run_command(
                [command, "--properties", temp, "--token-file", token_file, "--force-enroll", "--json",
                 "--timeout", str(self.params["enrollment_timeout"])],
                environ_update={"LANG": "C"})
        finally:
            shutil.rmtree(private, ignore_errors=True)
        try:
            outcome = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except ValueError:
            outcome = {}
        if rc != 0 or not outcome.get("enrolled"):
            message = outcome.get("msg") or (err or out).strip() or "exit status %d" % rc
            raise ResourceError("enrolling with the engine failed: %s; %s is unchanged" % (message.replace(token, props.MASK), path))
        # setup-agent may have normalised the copy; what it holds is what the agent reads.
        self.replace(temp, path, self.file_mode(path, read_text(temp)))


def _mode_of(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def main():
    Agent(argument_spec=ARGUMENT_SPEC).run()


if __name__ == "__main__":
    main()
