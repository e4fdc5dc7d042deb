#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_zone
short_description: Manage zones on a CloudStack-compatible cloud
description:
  - Create, update, enable, disable and delete zones.
  - A new zone is V(Disabled) unless O(state=enabled). Enabling needs a physical network with Management traffic
    in the zone, see M(stackwright.cloudstack.cs_physical_network).
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the zone.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the zone and leaves its allocation state alone.
      - V(enabled) and V(disabled) also set the allocation state.
    type: str
    choices: [present, absent, enabled, disabled]
    default: present
  dns1:
    description: First public DNS server. Required to create a zone.
    type: str
  dns2:
    description: Second public DNS server.
    type: str
  internal_dns1:
    description: First internal DNS server (used by system VMs). Defaults to O(dns1) when creating.
    type: str
  internal_dns2:
    description: Second internal DNS server.
    type: str
  dns1_ipv6:
    description: First IPv6 DNS server.
    type: str
  dns2_ipv6:
    description: Second IPv6 DNS server.
    type: str
  network_type:
    description: Network model of the zone. Only used when creating it.
    type: str
    choices: [Basic, Advanced]
    default: Advanced
  network_domain:
    description: DNS domain of guest networks.
    type: str
  guest_cidr_address:
    description: Guest CIDR of an V(Advanced) zone.
    type: str
  local_storage_enabled:
    description: Whether VMs may use host-local storage.
    type: bool
  security_groups_enabled:
    description: Whether security groups are on. Only used when creating the zone; V(Basic) zones always have them.
    type: bool
    aliases: [securitygroups_enabled]
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Ensure a zone exists
  stackwright.cloudstack.cs_zone:
    name: zone1
    dns1: 192.0.2.53
    internal_dns1: 10.0.0.2
    network_type: Advanced

- name: Enable the zone once its physical network is in place
  stackwright.cloudstack.cs_zone:
    name: zone1
    state: enabled

- name: Remove the zone
  stackwright.cloudstack.cs_zone:
    name: zone1
    state: absent
"""

RETURN = r"""
zone:
  description: The zone as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the zone.
      type: str
      sample: 04589590-ac63-4ffc-93f5-b698b8ac38b6
    name:
      description: Name of the zone.
      type: str
      sample: zone1
    dns1:
      description: First public DNS server.
      type: str
      sample: 192.0.2.53
    dns2:
      description: Second public DNS server.
      type: str
    internal_dns1:
      description: First internal DNS server.
      type: str
      sample: 10.0.0.2
    internal_dns2:
      description: Second internal DNS server.
      type: str
    dns1_ipv6:
      description: First IPv6 DNS server.
      type: str
    dns2_ipv6:
      description: Second IPv6 DNS server.
      type: str
    network_type:
      description: Network model.
      type: str
      sample: Advanced
    network_domain:
      description: DNS domain of guest networks.
      type: str
      sample: cloud.example.com
    guest_cidr_address:
      description: Guest CIDR.
      type: str
      sample: 10.1.0.0/16
    security_groups_enabled:
      description: Whether security groups are on.
      type: bool
      sample: false
    local_storage_enabled:
      description: Whether local storage is on.
      type: bool
      sample: false
    dhcp_provider:
      description: DHCP provider of the zone.
      type: str
      sample: VirtualRouter
    allocation_state:
      description: Allocation state.
      type: str
      sample: Disabled
    zone_token:
      description: Token of the zone.
      type: str
      sample: 0d8e4a6c-2c9f-3ef1-a0d7-6b1b5f3c7e21
    tags:
      description: Tags of the zone.
      type: list
      elements: raw
      sample: []
diff:
  description: The zone before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
  sample: {"before": {"name": "zone1", "dns1": "192.0.2.53"}, "after": {"name": "zone1", "dns1": "192.0.2.54"}}
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    ZONE,
    CloudStackResource,
)


class Zone(CloudStackResource):
    kind = ZONE
    create_command = "createZone"
    update_command = "updateZone"
    delete_command = "deleteZone"
    required_for_create = ("dns1",)
    create_defaults = {"allocation_state": "Disabled", "local_storage_enabled": False, "tags": []}
    state_field = "allocation_state"
    state_values = {"enabled": "Enabled", "disabled": "Disabled"}

    def create_params(self, want):
        params = super(Zone, self).create_params(want)
        params.setdefault("internaldns1", want.get("dns1"))
        return params

    def predict_create(self, want):
        predicted = super(Zone, self).predict_create(want)
        predicted.setdefault("internal_dns1", want.get("dns1"))
        if want.get("network_type") == "Basic":
            predicted["security_groups_enabled"] = True
        return predicted


def main():
    Zone(argument_spec=dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled"]),
        dns1=dict(type="str"),
        dns2=dict(type="str"),
        internal_dns1=dict(type="str"),
        internal_dns2=dict(type="str"),
        dns1_ipv6=dict(type="str"),
        dns2_ipv6=dict(type="str"),
        network_type=dict(type="str", default="Advanced", choices=["Basic", "Advanced"]),
        network_domain=dict(type="str"),
        guest_cidr_address=dict(type="str"),
        local_storage_enabled=dict(type="bool"),
        security_groups_enabled=dict(type="bool"),
    )).run()


if __name__ == "__main__":
    main()
