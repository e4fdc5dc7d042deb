#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_cluster
short_description: Manage clusters on a CloudStack-compatible cloud
description:
  - Add, update, enable, disable and delete clusters of a pod.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the cluster (matched case-insensitively).
    type: str
    required: true
  zone:
    description: Zone of the cluster (name or UUID).
    type: str
    required: true
  pod:
    description: Pod of the cluster (name or UUID). Required to add a cluster.
    type: str
  state:
    description:
      - V(present) adds or updates the cluster and leaves its allocation state alone.
      - V(enabled) and V(disabled) also set the allocation state.
    type: str
    choices: [present, absent, enabled, disabled]
    default: present
  hypervisor:
    description: Hypervisor of the cluster's hosts. Required to add a cluster; only used then.
    type: str
    choices: [KVM, Simulator]
  cluster_type:
    description: Who manages the cluster. Only used when adding it.
    type: str
    choices: [CloudManaged, ExternalManaged]
    default: CloudManaged
  arch:
    description: CPU architecture of the cluster's hosts. Only used when adding it.
    type: str
    choices: [x86_64, aarch64]
  managed_state:
    description: Managed state of the cluster.
    type: str
    choices: [Managed, Unmanaged]
  url:
    description: URL of an externally managed cluster. Only used when adding it.
    type: str
  username:
    description: User name for O(url). Only used when adding the cluster.
    type: str
  password:
    description: Password for O(url). Only used when adding the cluster.
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Ensure a KVM cluster exists
  stackwright.cloudstack.cs_cluster:
    name: cluster1
    zone: zone1
    pod: pod1
    hypervisor: KVM

- name: Disable the cluster
  stackwright.cloudstack.cs_cluster:
    name: cluster1
    zone: zone1
    state: disabled
"""

RETURN = r"""
cluster:
  description: The cluster as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the cluster.
      type: str
      sample: 7d1f1c1a-9a53-4bb2-8a0f-0c7c6f1d2e33
    name:
      description: Name of the cluster.
      type: str
      sample: cluster1
    zone:
      description: Name of the zone.
      type: str
      sample: zone1
    zone_id:
      description: UUID of the zone.
      type: str
    pod:
      description: Name of the pod.
      type: str
      sample: pod1
    pod_id:
      description: UUID of the pod.
      type: str
    hypervisor:
      description: Hypervisor of the cluster.
      type: str
      sample: KVM
    cluster_type:
      description: Cluster type.
      type: str
      sample: CloudManaged
    arch:
      description: CPU architecture.
      type: str
      sample: x86_64
    allocation_state:
      description: Allocation state.
      type: str
      sample: Enabled
    managed_state:
      description: Managed state.
      type: str
      sample: Managed
    cpu_overcommit_ratio:
      description: CPU over-provisioning factor of the cluster.
      type: str
      sample: "1.0"
    memory_overcommit_ratio:
      description: Memory over-provisioning factor of the cluster.
      type: str
      sample: "1.0"
diff:
  description: The cluster before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    CLUSTER,
    CloudStackResource,
)


class Cluster(CloudStackResource):
    kind = CLUSTER
    create_command = "addCluster"
    update_command = "updateCluster"
    delete_command = "deleteCluster"
    required_for_create = ("pod", "hypervisor")
    create_defaults = {"allocation_state": "Enabled", "managed_state": "Managed"}
    state_field = "allocation_state"
    state_values = {"enabled": "Enabled", "disabled": "Disabled"}

    def create_params(self, want):
        params = super(Cluster, self).create_params(want)
        params.update(url=self.params["url"], username=self.params["username"], password=self.params["password"])
        return params


def main():
    Cluster(argument_spec=dict(
        name=dict(type="str", required=True),
        zone=dict(type="str", required=True),
        pod=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled"]),
        hypervisor=dict(type="str", choices=["KVM", "Simulator"]),
        cluster_type=dict(type="str", default="CloudManaged", choices=["CloudManaged", "ExternalManaged"]),
        arch=dict(type="str", choices=["x86_64", "aarch64"]),
        managed_state=dict(type="str", choices=["Managed", "Unmanaged"]),
        url=dict(type="str"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
    )).run()


if __name__ == "__main__":
    main()
