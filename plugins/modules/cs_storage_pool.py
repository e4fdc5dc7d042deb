#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_storage_pool
short_description: Manage primary storage pools on a CloudStack-compatible cloud
description:
  - Create primary storage, change its tags, enable, disable, put it into maintenance and take it out again,
    and delete it.
  - Deleting a pool first puts it into maintenance.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the pool.
    type: str
    required: true
  zone:
    description: Zone of the pool (name or UUID).
    type: str
    required: true
  pod:
    description: Pod of a cluster-wide pool (name or UUID).
    type: str
  cluster:
    description: Cluster of a cluster-wide pool (name or UUID). Required to create a pool of O(scope=cluster).
    type: str
  scope:
    description: Where the pool is visible. Only used when creating it.
    type: str
    choices: [cluster, zone, host]
    default: cluster
  url:
    description:
      - Location of the storage, for example C(nfs://192.0.2.10/export/primary). Required to create a pool.
      - Only used when creating it.
    type: str
    aliases: [storage_url]
  hypervisor:
    description: Hypervisor of a zone-wide pool. Only used when creating it.
    type: str
    choices: [KVM, Simulator]
  provider:
    description: Storage provider. Only used when creating the pool.
    type: str
    default: DefaultPrimary
  storage_tags:
    description: Tags of the pool; they replace the current tags. An empty list removes all tags.
    type: list
    elements: str
    aliases: [storage_tag]
  capacity_bytes:
    description: Capacity of a managed pool in bytes. Only used when creating it.
    type: int
  capacity_iops:
    description: IOPS of a managed pool. Only used when creating it.
    type: int
  state:
    description:
      - V(present) creates the pool or updates its tags and leaves its state alone.
      - V(enabled) and V(disabled) switch allocation on or off; V(enabled) also cancels maintenance.
      - V(maintenance) puts the pool into maintenance and waits until it is done.
      - V(absent) puts the pool into maintenance and deletes it.
    type: str
    choices: [present, absent, enabled, disabled, maintenance]
    default: present
  allocation_state:
    description:
      - The way M(ngine_io.cloudstack.cs_storage_pool) sets the state, kept for its playbooks.
      - With O(state=present), the same as O(state) set to this value; ignored with any other O(state).
    type: str
    choices: [disabled, enabled, maintenance]
  wait_timeout:
    description: Seconds to wait for maintenance jobs.
    type: int
    default: 300
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Ensure an NFS primary storage pool exists for a cluster
  stackwright.cloudstack.cs_storage_pool:
    name: primary1
    zone: zone1
    pod: pod1
    cluster: cluster1
    url: nfs://192.0.2.10/export/primary
    storage_tags: [ssd]

- name: Put the pool into maintenance
  stackwright.cloudstack.cs_storage_pool:
    name: primary1
    zone: zone1
    state: maintenance

- name: Delete the pool
  stackwright.cloudstack.cs_storage_pool:
    name: primary1
    zone: zone1
    state: absent
"""

RETURN = r"""
storage_pool:
  description: The pool as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the pool.
      type: str
      sample: 2c5d7e9f-1a3b-4c5d-8e7f-9a0b1c2d3e4f
    name:
      description: Name of the pool.
      type: str
      sample: primary1
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
    scope:
      description: Scope of the pool.
      type: str
      sample: CLUSTER
    type:
      description: Storage type.
      type: str
      sample: NetworkFilesystem
    ip_address:
      description: Storage server.
      type: str
      sample: 192.0.2.10
    path:
      description: Path on the storage server.
      type: str
      sample: /export/primary
    state:
      description: State of the pool.
      type: str
      sample: Up
    hypervisor:
      description: Hypervisor of a zone-wide pool.
      type: str
    provider:
      description: Storage provider.
      type: str
      sample: DefaultPrimary
    storage_tags:
      description: Tags of the pool.
      type: list
      elements: str
      sample: [ssd]
    capacity_bytes:
      description: Total size in bytes.
      type: int
    capacity_iops:
      description: IOPS of a managed pool.
      type: int
    disk_size_allocated:
      description: Bytes allocated to volumes.
      type: int
    disk_size_used:
      description: Bytes used.
      type: int
    overprovision_factor:
      description: Storage over-provisioning factor of the pool.
      type: str
      sample: "2.0"
diff:
  description: The pool before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    STORAGE_POOL,
    CloudStackResource,
    ResourceError,
)

MAINTENANCE_STATES = ("PrepareForMaintenance", "Maintenance", "ErrorInMaintenance")


class StoragePool(CloudStackResource):
    kind = STORAGE_POOL
    create_command = "createStoragePool"
    update_command = "updateStoragePool"
    delete_command = "deleteStoragePool"
    required_for_create = ("url",)
    option_aliases = {"url": ["storage_url"], "storage_tags": ["storage_tag"]}
    allocation_state_option = True
    create_defaults = {"state": "Up", "storage_tags": []}
    state_field = "state"
    state_values = {"enabled": "Up", "disabled": "Disabled", "maintenance": "Maintenance"}

    def check_create(self, want):
        super(StoragePool, self).check_create(want)
        needed = {"cluster": "cluster", "zone": "hypervisor"}.get(self.params["scope"])
        if needed and not self.params[needed]:
            raise ResourceError("creating storage pool '%s' of scope %s needs %s"
                                % (self.params["name"], self.params["scope"], needed))

    def predict_create(self, want):
        predicted = super(StoragePool, self).predict_create(want)
        predicted["scope"] = self.params["scope"].upper()
        return predicted

    def create_params(self, want):
        params = super(StoragePool, self).create_params(dict((k, v) for k, v in want.items() if k != "state"))
        params["url"] = self.params["url"]
        return params

    def create(self, want):
        pool = self.unwrap(self.call("createStoragePool", **self.create_params(want)))
        # A pool that waits for a host to attach it (Initialized) is what present asks for too.
        if "state" in want and want["state"] != pool.get("state"):
            pool = self.set_state(pool, want["state"])
        return pool

    def update(self, current, changes):
        pool = current
        if "storage_tags" in changes:
            pool = self.unwrap(self.call("updateStoragePool", id=pool["id"],
                                         tags=",".join(changes["storage_tags"][1])))
        if "state" in changes:
            pool = self.set_state(pool, changes["state"][1])
        return pool

    def delete(self, current):
        if current.get("state") != "Maintenance":
            self.set_state(current, "Maintenance")
        self.call("deleteStoragePool", id=current["id"])

    def set_state(self, pool, target):
        if target == "Maintenance":
            return self.unwrap(self.call("enableStorageMaintenance", id=pool["id"]))
        if pool.get("state") in MAINTENANCE_STATES:
            pool = self.unwrap(self.call("cancelStorageMaintenance", id=pool["id"]))
        if pool.get("state") != target:
            pool = self.unwrap(self.call("updateStoragePool", id=pool["id"], enabled=target == "Up"))
        return pool


def main():
    StoragePool(argument_spec=dict(
        name=dict(type="str", required=True),
        zone=dict(type="str", required=True),
        pod=dict(type="str"),
        cluster=dict(type="str"),
        scope=dict(type="str", default="cluster", choices=["cluster", "zone", "host"]),
        url=dict(type="str"),
        hypervisor=dict(type="str", choices=["KVM", "Simulator"]),
        provider=dict(type="str", default="DefaultPrimary"),
        storage_tags=dict(type="list", elements="str"),
        capacity_bytes=dict(type="int"),
        capacity_iops=dict(type="int"),
        state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled", "maintenance"]),
        wait_timeout=dict(type="int", default=300),
    )).run()


if __name__ == "__main__":
    main()
