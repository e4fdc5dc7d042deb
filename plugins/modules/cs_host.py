#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_host
short_description: Manage hypervisor hosts on a CloudStack-compatible cloud
description:
  - Add hosts to a cluster and wait until they are V(Up), change their tags, enable, disable, put them into
    maintenance and take them out again, and remove them.
  - Removing a host first puts it into maintenance, then deletes it.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description:
      - Name or IP address of the host, as CloudStack reports it.
      - For KVM hosts this is also the address in the default O(url).
    type: str
    aliases: [ip_address]
    required: true
  url:
    description:
      - URL CloudStack uses to reach the host when adding it. Defaults to C(http://<name>).
      - Only used when adding the host.
    type: str
  zone:
    description: Zone of the host (name or UUID).
    type: str
    required: true
  pod:
    description: Pod of the host (name or UUID). Required to add a host.
    type: str
  cluster:
    description: Cluster of the host (name or UUID). Required to add a host.
    type: str
  hypervisor:
    description: Hypervisor of the host. Required to add a host; only used then.
    type: str
    choices: [KVM, Simulator]
  username:
    description: User CloudStack logs in as to set up the host. Only used when adding it.
    type: str
  password:
    description: Password of O(username). Only used when adding the host.
    type: str
  host_tags:
    description: Tags of the host; they replace the current tags. An empty list removes all tags.
    type: list
    elements: str
    aliases: [host_tag]
  state:
    description:
      - V(present) adds the host or updates its tags and leaves its resource state alone.
      - V(enabled) and V(disabled) also set the resource state; V(enabled) takes a host out of maintenance.
      - V(maintenance) prepares the host for maintenance and waits until it is in V(Maintenance); the engine
        live-migrates the host's running guests to other hosts of its cluster first. A host left in
        V(ErrorInPrepareForMaintenance) by an earlier attempt is taken out of it and tried again.
      - V(absent) puts the host into maintenance and deletes it.
    type: str
    choices: [present, absent, enabled, disabled, maintenance]
    default: present
  allocation_state:
    description:
      - The way M(ngine_io.cloudstack.cs_host) sets the state, kept for its playbooks.
      - With O(state=present), the same as O(state) set to this value; ignored with any other O(state).
    type: str
    choices: [disabled, enabled, maintenance]
  wait_timeout:
    description: Seconds to wait for a new host to be V(Up) and for maintenance jobs to finish.
    type: int
    default: 300
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Add a KVM host and wait until it is up
  stackwright.cloudstack.cs_host:
    name: 10.0.0.11
    zone: zone1
    pod: pod1
    cluster: cluster1
    hypervisor: KVM
    username: root
    password: "{{ kvm_host_password }}"
    host_tags: [perf]

- name: Put the host into maintenance
  stackwright.cloudstack.cs_host:
    name: 10.0.0.11
    zone: zone1
    state: maintenance

- name: Take it out of maintenance
  stackwright.cloudstack.cs_host:
    name: 10.0.0.11
    zone: zone1
    state: enabled

- name: Remove the host
  stackwright.cloudstack.cs_host:
    name: 10.0.0.11
    zone: zone1
    state: absent
"""

RETURN = r"""
migrated:
  description: The guests that ran on the host when O(state=maintenance) put it into maintenance, and the host
    the engine live-migrated each to.
  returned: when the host went into maintenance
  type: list
  elements: dict
  sample: [{"name": "web1", "id": "5d1c0e2a-9b8f-4c3e-8a2f-1d2e3f4a5b6c", "from": "kvm1", "to": "kvm2"}]
host:
  description: The host as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the host.
      type: str
      sample: 9b0e3f2c-5a1d-4e7b-8c6f-1d2e3f4a5b6c
    name:
      description: Name of the host.
      type: str
      sample: kvm1
    ip_address:
      description: IP address of the host.
      type: str
      sample: 10.0.0.11
    type:
      description: Host type.
      type: str
      sample: Routing
    state:
      description: Connection state.
      type: str
      sample: Up
    resource_state:
      description: Resource state.
      type: str
      sample: Enabled
    hypervisor:
      description: Hypervisor.
      type: str
      sample: KVM
    hypervisor_version:
      description: Hypervisor version.
      type: str
    zone:
      description: Name of the zone.
      type: str
    zone_id:
      description: UUID of the zone.
      type: str
    pod:
      description: Name of the pod.
      type: str
    pod_id:
      description: UUID of the pod.
      type: str
    cluster:
      description: Name of the cluster.
      type: str
    cluster_id:
      description: UUID of the cluster.
      type: str
    host_tags:
      description: Tags of the host.
      type: list
      elements: str
      sample: [perf]
    cpu_sockets:
      description: CPU sockets.
      type: int
    cpu_number:
      description: Logical CPUs.
      type: int
    cpu_speed:
      description: CPU speed in MHz.
      type: int
    memory_total:
      description: Memory in bytes.
      type: int
    memory_allocated:
      description: Bytes of memory the host's guests are allocated.
      type: int
      sample: 4294967296
    memory_with_overprovisioning:
      description: Memory in bytes after the cluster's memory over-commit ratio.
      type: str
      sample: "8589934592"
    cpu_allocated_mhz:
      description: MHz of CPU the host's guests are allocated.
      type: int
      sample: 2000
    cpu_with_overprovisioning:
      description: CPU in MHz after the cluster's CPU over-commit ratio.
      type: str
      sample: "9600"
    version:
      description: Agent version.
      type: str
    created:
      description: When the host was added.
      type: str
diff:
  description: The host before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

import time

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    HOST,
    CloudStackResource,
    ResourceError,
)

MAINTENANCE_STATES = ("PrepareForMaintenance", "Maintenance", "ErrorInPrepareForMaintenance", "ErrorInMaintenance")
MAINTENANCE_ERRORS = ("ErrorInPrepareForMaintenance", "ErrorInMaintenance")
POLL_INTERVAL = 2


class Host(CloudStackResource):
    kind = HOST
    create_command = "addHost"
    filter_by_name = False
    required_for_create = ("pod", "cluster", "hypervisor")
    option_aliases = {"name": ["ip_address"]}
    allocation_state_option = True
    state_field = "resource_state"
    state_values = {"enabled": "Enabled", "disabled": "Disabled", "maintenance": "Maintenance"}
    # The guests the engine migrated away while this run put the host into maintenance.
    migrated = None

    def execute(self):
        result = super(Host, self).execute()
        if self.migrated is not None:
            result["migrated"] = self.migrated
        return result

    def find_filters(self):
        return {"zoneid": self.zone()["id"], "type": "Routing"}

    def matches(self, obj):
        wanted = self.params["name"].lower()
        return wanted in (str(obj.get("name", "")).lower(), str(obj.get("ipaddress", "")).lower())

    def predict_create(self, want):
        predicted = super(Host, self).predict_create(want)
        predicted.update(state="Up", type="Routing")
        predicted.setdefault("resource_state", "Enabled")
        return predicted

    def create(self, want):
        params = self.scope_ids()
        params.update(url=self.params["url"] or "http://%s" % self.params["name"],
                      hypervisor=self.params["hypervisor"], username=self.params["username"],
                      password=self.params["password"], hosttags=want.get("host_tags"))
        if self.state == "disabled":
            params["allocationstate"] = "Disabled"
        host = self.unwrap(self.call("addHost", **params))
        host = self.wait_for(host, lambda h: h.get("state") == "Up", "state Up")
        if self.state == "maintenance":
            host = self.enter_maintenance(host)
        return host

    def update(self, current, changes):
        host = current
        if "host_tags" in changes:
            host = self.update_host(host, hosttags=",".join(changes["host_tags"][1]))
        if "resource_state" in changes:
            host = self.set_resource_state(host, changes["resource_state"][1])
        return host

    def delete(self, current):
        if current.get("resourcestate") != "Maintenance":
            self.enter_maintenance(current)
        self.call("deleteHost", id=current["id"])

    # Resource state transitions --------------------------------------------

    def set_resource_state(self, host, target):
        if target == "Maintenance":
            return self.enter_maintenance(host)
        if host.get("resourcestate") in MAINTENANCE_STATES:
            host = self.unwrap(self.call("cancelHostMaintenance", id=host["id"]))
        if host.get("resourcestate") != target:
            host = self.update_host(host, allocationstate="Enable" if target == "Enabled" else "Disable")
        return host

    def enter_maintenance(self, host):
        if host.get("resourcestate") in MAINTENANCE_ERRORS:
            # A maintenance that failed (a guest could not be migrated) is cancelled, then tried again.
            host = self.unwrap(self.call("cancelHostMaintenance", id=host["id"]))
        if host.get("resourcestate") == "Disabled":
            # CloudStack has no Disabled -> PrepareForMaintenance transition.
            host = self.update_host(host, allocationstate="Enable")
        running = []
        if host.get("resourcestate") not in ("PrepareForMaintenance", "Maintenance"):
            running = [vm for vm in self.client.list("listVirtualMachines", "virtualmachine", hostid=host["id"],
                                                     listall=True) if vm.get("state") == "Running"]
            host = self.unwrap(self.call("prepareHostForMaintenance", id=host["id"]))
        host = self.wait_for(host, lambda h: h.get("resourcestate") == "Maintenance", "resource state Maintenance",
                             fail_states=MAINTENANCE_ERRORS)
        self.migrated = self.where_they_went(host, running)
        return host

    def where_they_went(self, host, guests):
        """[{name, id, from, to}] of `guests` that ran on `host` before its maintenance."""
        if not guests:
            return []
        now = dict((vm["id"], vm) for vm in self.client.list(
            "listVirtualMachines", "virtualmachine", ids=",".join(vm["id"] for vm in guests), listall=True))
        return [{"name": vm["name"], "id": vm["id"], "from": host.get("name"),
                 "to": now.get(vm["id"], {}).get("hostname")} for vm in guests]

    def update_host(self, host, **params):
        return self.unwrap(self.call("updateHost", id=host["id"], **params))

    def wait_for(self, host, reached, what, fail_states=()):
        """Re-list the host until `reached(host)`, within wait_timeout."""
        deadline = time.monotonic() + self.wait_timeout
        while not reached(host):
            if host.get("resourcestate") in fail_states:
                raise ResourceError("host '%s' went to %s instead of %s" % (self.params["name"],
                                                                            host["resourcestate"], what))
            if time.monotonic() >= deadline:
                raise ResourceError("host '%s' did not reach %s within %s seconds (wait_timeout); it is %s/%s"
                                    % (self.params["name"], what, self.wait_timeout, host.get("state"),
                                       host.get("resourcestate")))
            time.sleep(POLL_INTERVAL)
            listed = self.list(HOST, id=host["id"])
            if not listed:
                raise ResourceError("host '%s' disappeared while waiting for %s" % (self.params["name"], what))
            host = listed[0]
        return host


def main():
    Host(argument_spec=dict(
        name=dict(type="str", required=True),
        url=dict(type="str"),
        zone=dict(type="str", required=True),
        pod=dict(type="str"),
        cluster=dict(type="str"),
        hypervisor=dict(type="str", choices=["KVM", "Simulator"]),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        host_tags=dict(type="list", elements="str", aliases=["host_tag"]),
        state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled", "maintenance"]),
        wait_timeout=dict(type="int", default=300),
    )).run()


if __name__ == "__main__":
    main()
