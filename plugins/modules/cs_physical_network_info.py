#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_physical_network_info
short_description: List physical networks of a CloudStack-compatible cloud
description:
  - Returns physical networks with their traffic types, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the network with this name (case-insensitive).
    type: str
    aliases: [physical_network]
  zone:
    description: Only networks of this zone (name or UUID).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the physical networks of a zone
  stackwright.cloudstack.cs_physical_network_info:
    zone: zone1
  register: result

- name: Check that the management network carries its traffic
  ansible.builtin.assert:
    that: "'Management' in result.physical_networks[0].traffic_types | map(attribute='type')"
"""

RETURN = r"""
physical_networks:
  description:
    - Matching networks, with the keys M(stackwright.cloudstack.cs_physical_network) returns.
    - Each also carries C(isolation_method), the comma-separated form C(ngine_io.cloudstack) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "8d3b4c1e-5f6a-4b7c-9d8e-1f2a3b4c5d6e", "name": "phy1", "zone": "zone1", "state": "Enabled",
            "isolation_methods": ["VLAN"], "isolation_method": "VLAN",
            "traffic_types": [{"type": "Management", "kvm_network_label": "cloudbr0"}]}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    PHYSICAL_NETWORK,
    CloudStackInfo,
    info_argument_spec,
    traffic_types,
)


class PhysicalNetworkInfo(CloudStackInfo):
    kind = PHYSICAL_NETWORK
    option_aliases = {"name": ["physical_network"]}

    def execute(self):
        result = super(PhysicalNetworkInfo, self).execute()
        for network in result[self.kind.plural]:
            network["traffic_types"] = traffic_types(self.client, network["id"])
        return result


def main():
    PhysicalNetworkInfo(argument_spec=info_argument_spec("zone")).run()


if __name__ == "__main__":
    main()
