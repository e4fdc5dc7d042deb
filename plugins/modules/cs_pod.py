#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_pod
short_description: Manage pods on a CloudStack-compatible cloud
description:
  - Create, update, enable, disable and delete pods of a zone.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the pod.
    type: str
    required: true
  zone:
    description: Zone of the pod (name or UUID).
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the pod and leaves its allocation state alone.
      - V(enabled) and V(disabled) also set the allocation state.
    type: str
    choices: [present, absent, enabled, disabled]
    default: present
  gateway:
    description: Gateway of the pod's management network. Required to create a pod.
    type: str
  netmask:
    description: Netmask of the pod's management network. Required to create a pod.
    type: str
  start_ip:
    description: First address reserved for system VMs. Required to create a pod; only used then.
    type: str
  end_ip:
    description:
      - Last address reserved for system VMs; only used when creating the pod.
      - CloudStack defaults it to the last usable address of O(gateway)/O(netmask).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Ensure a pod exists
  stackwright.cloudstack.cs_pod:
    name: pod1
    zone: zone1
    gateway: 10.0.0.1
    netmask: 255.255.255.0
    start_ip: 10.0.0.100
    end_ip: 10.0.0.199

- name: Disable the pod
  stackwright.cloudstack.cs_pod:
    name: pod1
    zone: zone1
    state: disabled
"""

RETURN = r"""
pod:
  description: The pod as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the pod.
      type: str
      sample: 4f2b4c8e-2d6a-4d4f-9bfa-0a2f7c1e8d11
    name:
      description: Name of the pod.
      type: str
      sample: pod1
    zone:
      description: Name of the zone.
      type: str
      sample: zone1
    zone_id:
      description: UUID of the zone.
      type: str
      sample: 04589590-ac63-4ffc-93f5-b698b8ac38b6
    gateway:
      description: Gateway.
      type: str
      sample: 10.0.0.1
    netmask:
      description: Netmask.
      type: str
      sample: 255.255.255.0
    start_ip:
      description: First address of the pod's first range.
      type: str
      sample: 10.0.0.100
    end_ip:
      description: Last address of the pod's first range.
      type: str
      sample: 10.0.0.199
    allocation_state:
      description: Allocation state.
      type: str
      sample: Enabled
diff:
  description: The pod before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    POD,
    CloudStackResource,
)


class Pod(CloudStackResource):
    kind = POD
    create_command = "createPod"
    update_command = "updatePod"
    delete_command = "deletePod"
    required_for_create = ("gateway", "netmask", "start_ip")
    create_defaults = {"allocation_state": "Enabled"}
    state_field = "allocation_state"
    state_values = {"enabled": "Enabled", "disabled": "Disabled"}


def main():
    Pod(argument_spec=dict(
        name=dict(type="str", required=True),
        zone=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled"]),
        gateway=dict(type="str"),
        netmask=dict(type="str"),
        start_ip=dict(type="str"),
        end_ip=dict(type="str"),
    )).run()


if __name__ == "__main__":
    main()
