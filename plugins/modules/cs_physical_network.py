#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_physical_network
short_description: Manage physical networks and their traffic types on a CloudStack-compatible cloud
description:
  - Create, update, enable, disable and delete the physical networks of a zone.
  - Adds the listed traffic types and sets their KVM network labels (the host bridge carrying the traffic).
    Traffic types that are not listed are left alone, since CloudStack adds Storage traffic itself.
  - A zone can only be enabled once a physical network carries its Management traffic.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the physical network.
    type: str
    required: true
    aliases: [physical_network]
  zone:
    description: Zone of the network (name or UUID).
    type: str
    required: true
  isolation_methods:
    description: Isolation methods of guest traffic. Only used when creating the network.
    type: list
    elements: str
    choices: [VLAN, VXLAN, GRE, L3]
    aliases: [isolation_method]
  broadcast_domain_range:
    description: Broadcast domain range. Only used when creating the network.
    type: str
    choices: [ZONE, POD]
  vlan:
    description: VLAN range of guest traffic, for example C(100-199).
    type: str
  tags:
    description: Tags of the network.
    type: list
    elements: str
    aliases: [tag]
  network_speed:
    description: Speed of the network, for example C(1G).
    type: str
  traffic_types:
    description: Traffic types the network carries.
    type: list
    elements: dict
    suboptions:
      type:
        description: Kind of traffic.
        type: str
        required: true
        choices: [Management, Guest, Public, Storage]
      kvm_network_label:
        description: Bridge on KVM hosts that carries this traffic, for example C(cloudbr0).
        type: str
  state:
    description:
      - V(present) creates or updates the network and leaves its state alone.
      - V(enabled) and V(disabled) also set its state.
    type: str
    choices: [present, absent, enabled, disabled]
    default: present
  wait_timeout:
    description: Seconds to wait for the asynchronous jobs of physical networks and traffic types.
    type: int
    default: 300
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Management and guest traffic on cloudbr0, enabled
  stackwright.cloudstack.cs_physical_network:
    name: physnet1
    zone: zone1
    isolation_methods: [VXLAN]
    traffic_types:
      - type: Management
        kvm_network_label: cloudbr0
      - type: Guest
        kvm_network_label: cloudbr0
    state: enabled
"""

RETURN = r"""
physical_network:
  description: The physical network as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the network.
      type: str
      sample: 3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d
    name:
      description: Name of the network.
      type: str
      sample: physnet1
    zone:
      description: Name of the zone, when the API reports it.
      type: str
    zone_id:
      description: UUID of the zone.
      type: str
    state:
      description: State of the network.
      type: str
      sample: Enabled
    vlan:
      description: VLAN range.
      type: str
    tags:
      description: Tags.
      type: list
      elements: str
    isolation_methods:
      description: Isolation methods.
      type: list
      elements: str
      sample: [VXLAN]
    broadcast_domain_range:
      description: Broadcast domain range.
      type: str
      sample: ZONE
    network_speed:
      description: Network speed.
      type: str
    traffic_types:
      description: Traffic types of the network.
      type: list
      elements: dict
      sample: [{"type": "Management", "kvm_network_label": "cloudbr0"}]
diff:
  description: The network before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    PHYSICAL_NETWORK,
    CloudStackResource,
    after_values,
    traffic_types,
)

SETTINGS = ("vlan", "tags", "network_speed")


class PhysicalNetwork(CloudStackResource):
    kind = PHYSICAL_NETWORK
    delete_command = "deletePhysicalNetwork"
    option_aliases = {"name": ["physical_network"], "tags": ["tag"]}
    create_defaults = {"state": "Disabled"}
    state_field = "state"
    state_values = {"enabled": "Enabled", "disabled": "Disabled"}

    def traffic_types(self, network):
        return self.client.list("listTrafficTypes", "traffictype", physicalnetworkid=network["id"])

    def to_result(self, obj):
        result = super(PhysicalNetwork, self).to_result(obj)
        result["traffic_types"] = traffic_types(self.client, obj["id"])
        return result

    def desired(self):
        want = super(PhysicalNetwork, self).desired()
        if self.params["traffic_types"] is not None:
            want["traffic_types"] = self.params["traffic_types"]
        return want

    def compare(self, want, current):
        changes = super(PhysicalNetwork, self).compare(
            dict((key, value) for key, value in want.items() if key != "traffic_types"), current)
        if "traffic_types" in want:
            merged = self.merge_traffic_types(current.get("traffic_types", []), want["traffic_types"])
            if merged != current.get("traffic_types"):
                changes["traffic_types"] = (current.get("traffic_types"), merged)
        return changes

    @staticmethod
    def merge_traffic_types(current, wanted):
        """Current types with the wanted ones added or relabelled; unlisted types stay."""
        merged = dict((entry["type"], dict(entry)) for entry in current)
        for entry in wanted:
            existing = merged.setdefault(entry["type"], {"type": entry["type"], "kvm_network_label": None})
            if entry.get("kvm_network_label") is not None:
                existing["kvm_network_label"] = entry["kvm_network_label"]
        return [merged[name] for name in sorted(merged)]

    def predict_create(self, want):
        predicted = super(PhysicalNetwork, self).predict_create(want)
        predicted["traffic_types"] = self.merge_traffic_types([], want.get("traffic_types") or [])
        return predicted

    def create(self, want):
        params = self.create_params(dict((key, value) for key, value in want.items()
                                         if key not in ("state", "traffic_types")))
        network = self.unwrap(self.call("createPhysicalNetwork", **params))
        changes = {}
        if want.get("traffic_types"):
            changes["traffic_types"] = ([], self.merge_traffic_types([], want["traffic_types"]))
        if want.get("state", "Disabled") != network.get("state"):
            changes["state"] = (network.get("state"), want["state"])
        return self.update(network, changes)

    def update(self, current, changes):
        settings = self.request_params(dict((key, value) for key, value in after_values(changes).items()
                                            if key in SETTINGS))
        if settings:
            self.call("updatePhysicalNetwork", id=current["id"], **settings)
        if "traffic_types" in changes:
            self.apply_traffic_types(current, changes["traffic_types"][1])
        # Traffic types first: enabling may depend on them.
        if "state" in changes:
            self.call("updatePhysicalNetwork", id=current["id"], state=changes["state"][1])
        return self.list(PHYSICAL_NETWORK, id=current["id"])[0]

    def apply_traffic_types(self, network, wanted):
        existing = dict((item["traffictype"], item) for item in self.traffic_types(network))
        for entry in wanted:
            label = entry.get("kvm_network_label")
            item = existing.get(entry["type"])
            if item is None:
                self.call("addTrafficType", physicalnetworkid=network["id"], traffictype=entry["type"],
                          kvmnetworklabel=label)
            elif label is not None and item.get("kvmnetworklabel") != label:
                self.call("updateTrafficType", id=item["id"], kvmnetworklabel=label)


def main():
    PhysicalNetwork(argument_spec=dict(
        name=dict(type="str", required=True),
        zone=dict(type="str", required=True),
        isolation_methods=dict(type="list", elements="str", choices=["VLAN", "VXLAN", "GRE", "L3"]),
        broadcast_domain_range=dict(type="str", choices=["ZONE", "POD"]),
        vlan=dict(type="str"),
        tags=dict(type="list", elements="str"),
        network_speed=dict(type="str"),
        traffic_types=dict(type="list", elements="dict", options=dict(
            type=dict(type="str", required=True, choices=["Management", "Guest", "Public", "Storage"]),
            kvm_network_label=dict(type="str"),
        )),
        state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled"]),
        wait_timeout=dict(type="int", default=300),
    )).run()


if __name__ == "__main__":
    main()
