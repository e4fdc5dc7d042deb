#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_host_info
short_description: List hosts of a CloudStack-compatible cloud
description:
  - Returns hypervisor hosts, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the host with this name (case-insensitive).
    type: str
  zone:
    description: Only hosts of this zone (name or UUID). Required with O(pod) and O(cluster).
    type: str
  pod:
    description: Only hosts of this pod (name or UUID).
    type: str
  cluster:
    description: Only hosts of this cluster (name or UUID).
    type: str
  host_state:
    description: Only hosts in this connection state, for example V(Up) or V(Alert).
    type: str
  resource_state:
    description: Only hosts in this resource state, for example V(Enabled) or V(Maintenance).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the hosts of a cluster that are up
  stackwright.cloudstack.cs_host_info:
    zone: zone1
    cluster: cluster1
    host_state: Up
  register: result
"""

RETURN = r"""
hosts:
  description: Matching hosts, with the keys M(stackwright.cloudstack.cs_host) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "9b0e3f2c-5a1d-4e7b-8c6f-1d2e3f4a5b6c", "name": "kvm1", "state": "Up", "resource_state": "Enabled"}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    HOST,
    CloudStackInfo,
    info_argument_spec,
)


class HostInfo(CloudStackInfo):
    kind = HOST
    filters = {"host_state": "state", "resource_state": "resourcestate"}
    # Only hypervisor hosts; CloudStack lists system VMs' agents as hosts too.
    fixed_filters = {"type": "Routing"}


def main():
    spec = info_argument_spec("zone", "pod", "cluster")
    spec.update(host_state=dict(type="str"), resource_state=dict(type="str"))
    HostInfo(argument_spec=spec, required_by={"pod": "zone", "cluster": "zone"}).run()


if __name__ == "__main__":
    main()
