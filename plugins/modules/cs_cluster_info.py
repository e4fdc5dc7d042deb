#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_cluster_info
short_description: List clusters of a CloudStack-compatible cloud
description:
  - Returns clusters, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the cluster with this name (case-insensitive).
    type: str
  zone:
    description: Only clusters of this zone (name or UUID). Required with O(pod).
    type: str
  pod:
    description: Only clusters of this pod (name or UUID).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the clusters of a pod
  stackwright.cloudstack.cs_cluster_info:
    zone: zone1
    pod: pod1
  register: result
"""

RETURN = r"""
clusters:
  description: Matching clusters, with the keys M(stackwright.cloudstack.cs_cluster) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "7d1f1c1a-9a53-4bb2-8a0f-0c7c6f1d2e33", "name": "cluster1", "hypervisor": "KVM"}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    CLUSTER,
    CloudStackInfo,
    info_argument_spec,
)


class ClusterInfo(CloudStackInfo):
    kind = CLUSTER


def main():
    ClusterInfo(argument_spec=info_argument_spec("zone", "pod"), required_by={"pod": "zone"}).run()


if __name__ == "__main__":
    main()
