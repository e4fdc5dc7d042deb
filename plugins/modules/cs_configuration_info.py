#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_configuration_info
short_description: List configuration settings of a CloudStack-compatible cloud
description:
  - Returns global settings, or the values in force at a zone, cluster or storage pool.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the setting with exactly this name, for example V(cpu.overprovisioning.factor).
    type: str
  keyword:
    description: Only settings whose name contains this word.
    type: str
  category:
    description: Only settings of this category, for example V(Advanced).
    type: str
  zone:
    description: Values in force at this zone (name or UUID); also narrows O(cluster) and O(storage) lookups.
    type: str
  cluster:
    description: Values in force at this cluster (name or UUID).
    type: str
  storage:
    description: Values in force at this primary storage pool (name or UUID).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: Read one global setting
  stackwright.cloudstack.cs_configuration_info:
    name: cpu.overprovisioning.factor
  register: result

- name: Overprovisioning settings in force at a cluster
  stackwright.cloudstack.cs_configuration_info:
    keyword: overprovisioning
    zone: zone1
    cluster: cluster1
  register: result
"""

RETURN = r"""
configurations:
  description: Matching settings, with the keys M(stackwright.cloudstack.cs_configuration) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"name": "cpu.overprovisioning.factor", "value": "2.0", "default_value": "1.0", "scope": "cluster",
            "category": "Advanced", "is_dynamic": true}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    CLUSTER,
    CONFIGURATION,
    STORAGE_POOL,
    CloudStackInfo,
)


class ConfigurationInfo(CloudStackInfo):
    kind = CONFIGURATION
    filters = {"keyword": "keyword", "category": "category"}

    def scope_ids(self):
        """Settings are listed at one scope: the most specific option given."""
        zone_filter = {"zoneid": self.zone()["id"]} if self.params["zone"] else {}
        if self.params["cluster"]:
            return {"clusterid": self.lookup(CLUSTER, self.params["cluster"], **zone_filter)["id"]}
        if self.params["storage"]:
            return {"storageid": self.lookup(STORAGE_POOL, self.params["storage"], **zone_filter)["id"]}
        return zone_filter

    def execute(self):
        if self.params["name"] and not self.params["keyword"]:
            # listConfigurations matches name as a substring; narrow server-side, compare exactly after.
            self.filters = dict(self.filters, name="name")
        return super(ConfigurationInfo, self).execute()


def main():
    ConfigurationInfo(argument_spec=dict(
        name=dict(type="str"),
        keyword=dict(type="str", no_log=False),
        category=dict(type="str"),
        zone=dict(type="str"),
        cluster=dict(type="str"),
        storage=dict(type="str"),
    ), mutually_exclusive=[("cluster", "storage")]).run()


if __name__ == "__main__":
    main()
