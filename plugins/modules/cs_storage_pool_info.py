#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_storage_pool_info
short_description: List primary storage pools of a CloudStack-compatible cloud
description:
  - Returns primary storage pools, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only pools with this name (case-insensitive).
    type: str
  zone:
    description: Only pools of this zone (name or UUID). Required with O(pod) and O(cluster).
    type: str
  pod:
    description: Only pools of this pod (name or UUID).
    type: str
  cluster:
    description: Only pools of this cluster (name or UUID).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the primary storage of a zone
  stackwright.cloudstack.cs_storage_pool_info:
    zone: zone1
  register: result
"""

RETURN = r"""
storage_pools:
  description: Matching pools, with the keys M(stackwright.cloudstack.cs_storage_pool) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "2c5d7e9f-1a3b-4c5d-8e7f-9a0b1c2d3e4f", "name": "primary1", "state": "Up", "scope": "CLUSTER"}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    STORAGE_POOL,
    CloudStackInfo,
    info_argument_spec,
)


class StoragePoolInfo(CloudStackInfo):
    kind = STORAGE_POOL


def main():
    StoragePoolInfo(argument_spec=info_argument_spec("zone", "pod", "cluster"),
                    required_by={"pod": "zone", "cluster": "zone"}).run()


if __name__ == "__main__":
    main()
