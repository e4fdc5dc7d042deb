#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_overprovision
short_description: Set CPU, memory and storage over-provisioning factors of a CloudStack-compatible cloud
description:
  - Sets C(cpu.overprovisioning.factor), C(mem.overprovisioning.factor) and C(storage.overprovisioning.factor)
    globally or for one cluster, and returns the capacity before and after.
  - CloudStack copies the global CPU and memory factors into a cluster when the cluster is created, so changing
    the global factors does not change existing clusters; set O(cluster) for those.
  - For a cluster, the storage factor is set on each primary storage pool of the cluster.
  - A running VM keeps the CPU and memory ratios it was started with (they are recorded with it) until it is
    stopped and started again, so a new cluster factor rates only VMs started after it; the capacity the VMs
    already running use grows or shrinks with the factor. The module lists those VMs in
    RV(keeping_started_ratios) and warns about them.
author: Stackwright maintainers (@stackwright)
options:
  cpu:
    description: CPU over-provisioning factor, a number of at least 1.
    type: float
  memory:
    description: Memory over-provisioning factor, a number of at least 1.
    type: float
  storage:
    description: Primary storage over-provisioning factor, a positive number.
    type: float
  cluster:
    description: Cluster to set the factors for (name or UUID). Without it the global factors are set.
    type: str
  zone:
    description:
      - Zone of O(cluster) (name or UUID), to narrow its lookup.
      - Without O(cluster), the capacity returned is the zone's.
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Over-commit CPU four times and memory one and a half times in one cluster
  stackwright.cloudstack.cs_overprovision:
    cluster: cluster1
    zone: zone1
    cpu: 4
    memory: 1.5
  register: result

- name: Show what it changed
  ansible.builtin.debug:
    msg: "CPU total {{ result.capacity_before.cpu.total }} -> {{ result.capacity_after.cpu.total }} MHz"

- name: Set the global storage factor
  stackwright.cloudstack.cs_overprovision:
    storage: 3
"""

RETURN = r"""
overprovision:
  description: The factors after the change.
  returned: success
  type: dict
  contains:
    cpu:
      description: CPU factor.
      type: float
      sample: 4.0
    memory:
      description: Memory factor.
      type: float
      sample: 1.5
    storage:
      description: Storage factor (for a cluster, that of its pools when they agree).
      type: float
      sample: 2.0
    cluster:
      description: Name of the cluster, when set.
      type: str
      sample: cluster1
capacity_before:
  description:
    - Capacity of the cluster (or zone, or cloud) before the change, from C(listCapacity).
    - Keys C(memory) (bytes), C(cpu) (MHz) and C(storage_allocated) (bytes), each with C(total), C(used) and
      C(percent_used).
  returned: success
  type: dict
  sample: {"cpu": {"total": 16000, "used": 2000, "percent_used": 12.5}}
capacity_after:
  description:
    - Capacity read again after the change, same keys as RV(capacity_before).
    - In check mode nothing changed, so it equals RV(capacity_before).
  returned: success
  type: dict
  sample: {"cpu": {"total": 64000, "used": 2000, "percent_used": 3.12}}
keeping_started_ratios:
  description:
    - Running VMs of O(cluster) whose recorded CPU or memory ratio differs from the factor set (or, in check mode,
      that would be set). They keep that ratio until they are stopped and started.
    - Empty without O(cluster), when no CPU or memory factor changes, or when every running VM already has it.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "9a1e...", "name": "web1", "cpu": 1.0, "memory": 2.0}]
diff:
  description: The factors before and after the change.
  returned: success
  type: dict
  sample: {"before": {"cpu": 1.0}, "after": {"cpu": 4.0}}
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    CLUSTER,
    CONFIGURATION,
    STORAGE_POOL,
    CloudStackModule,
    ResourceError,
)

FACTOR_KEYS = {
    "cpu": "cpu.overprovisioning.factor",
    "memory": "mem.overprovisioning.factor",
    "storage": "storage.overprovisioning.factor",
}
# Smallest factor CloudStack accepts per option, and whether the bound is inclusive.
FACTOR_MINIMUM = {"cpu": (1.0, True), "memory": (1.0, True), "storage": (0.0, False)}
CAPACITY_TYPES = {0: "memory", 1: "cpu", 3: "storage_allocated"}
# The VM details recording the ratios a guest was started with.
STARTED_RATIO_DETAILS = {"cpu": "cpuOvercommitRatio", "memory": "memoryOvercommitRatio"}


def check_factors(params):
    """Error message for the first out-of-range factor, or None."""
    for option, (minimum, inclusive) in sorted(FACTOR_MINIMUM.items()):
        value = params.get(option)
        if value is None:
            continue
        if value < minimum or (value == minimum and not inclusive):
            bound = "at least %g" % minimum if inclusive else "greater than %g" % minimum
            return "%s must be a number %s, got %s" % (option, bound, value)
    return None


def started_ratio(vm, option):
    """The ratio `vm` was started with for `option` (cpu or memory); 1.0 when none is recorded."""
    try:
        return float((vm.get("details") or {}).get(STARTED_RATIO_DETAILS[option], 1.0))
    except (TypeError, ValueError):
        return 1.0


def keeping_started_ratios(vms, changed):
    """Running `vms` whose recorded ratios differ from `changed` ({option: new factor})."""
    kept = []
    for vm in vms:
        ratios = dict((option, started_ratio(vm, option)) for option in STARTED_RATIO_DETAILS)
        if any(ratios[option] != factor for option, factor in changed.items()):
            kept.append(dict(id=vm.get("id"), name=vm.get("name"), **ratios))
    return kept


def summarise_capacity(rows):
    """listCapacity rows -> {name: {total, used, percent_used}} for the types this module affects."""
    summary = {}
    for row in rows:
        name = CAPACITY_TYPES.get(row.get("type"))
        if name is None:
            continue
        entry = summary.setdefault(name, {"total": 0, "used": 0})
        entry["total"] += row.get("capacitytotal", 0)
        entry["used"] += row.get("capacityused", 0)
    for entry in summary.values():
        entry["percent_used"] = round(100.0 * entry["used"] / entry["total"], 2) if entry["total"] else 0.0
    return summary


class Overprovision(CloudStackModule):

    def execute(self):
        problem = check_factors(self.params)
        if problem:
            raise ResourceError(problem)
        cluster = self.target_cluster()
        capacity_filter = {"clusterid": cluster["id"]} if cluster else self.scope_ids()
        capacity_before = self.capacity(capacity_filter)

        scopes = self.scopes(cluster)
        before = dict((option, self.current_factor(option, scopes[option])) for option in FACTOR_KEYS
                      if scopes[option])
        after = dict(before)
        changed = False
        for option in before:
            want = self.params[option]
            if want is None or before[option] == want:
                continue
            changed = True
            after[option] = want
            if not self.module.check_mode:
                for scope in scopes[option]:
                    self.call("updateConfiguration", name=FACTOR_KEYS[option], value=str(want), **scope)

        capacity_after = self.capacity(capacity_filter) if changed and not self.module.check_mode else capacity_before
        rated = dict((option, after[option]) for option in STARTED_RATIO_DETAILS
                     if option in before and after[option] != before[option])
        kept = self.keeping_started_ratios(cluster, rated)
        if cluster:
            for state in (before, after):
                state["cluster"] = cluster["name"]
        elif rated:
            self.module.warn("the global CPU and memory factors apply to clusters created later; existing "
                             "clusters keep their own, set them with the cluster option")
        return {"changed": changed, "overprovision": after, "diff": {"before": before, "after": after},
                "capacity_before": capacity_before, "capacity_after": capacity_after,
                "keeping_started_ratios": kept}

    def keeping_started_ratios(self, cluster, rated):
        """Running VMs of `cluster` that keep ratios other than `rated` until restarted; warns about them."""
        if cluster is None or not rated:
            return []
        vms = self.client.list("listVirtualMachines", "virtualmachine", clusterid=cluster["id"], state="Running",
                               listall="true")
        kept = keeping_started_ratios(vms, rated)
        if kept:
            self.module.warn(
                "%d running VM(s) of cluster %s (%s) keep the over-provisioning ratios they were started with until "
                "they are stopped and started; the capacity they use follows the new factor meanwhile"
                % (len(kept), cluster["name"], ", ".join(vm["name"] for vm in kept)))
        return kept

    def target_cluster(self):
        if not self.params["cluster"]:
            return None
        zone_filter = {"zoneid": self.zone()["id"]} if self.params["zone"] else {}
        return self.lookup(CLUSTER, self.params["cluster"], **zone_filter)

    def scopes(self, cluster):
        """Per option, the updateConfiguration scope parameters to set (one entry per object)."""
        if cluster is None:
            return dict((option, [{}]) for option in FACTOR_KEYS)
        scopes = {"cpu": [{"clusterid": cluster["id"]}], "memory": [{"clusterid": cluster["id"]}], "storage": []}
        if self.params["storage"] is not None:
            pools = self.list(STORAGE_POOL, clusterid=cluster["id"])
            if not pools:
                raise ResourceError("cluster '%s' has no primary storage pool to set the storage factor on"
                                    % cluster["name"])
            scopes["storage"] = [{"storageid": pool["id"]} for pool in pools]
        return scopes

    def current_factor(self, option, scopes):
        """The factor in force at the given scopes; None when they disagree, so the wanted value is applied."""
        values = []
        for scope in scopes:
            found = [item for item in self.list(CONFIGURATION, name=FACTOR_KEYS[option], **scope)
                     if item.get("name") == FACTOR_KEYS[option]]
            if not found:
                raise ResourceError("configuration '%s' not found" % FACTOR_KEYS[option])
            try:
                values.append(float(found[0].get("value")))
            except (TypeError, ValueError):
                raise ResourceError("configuration '%s' holds %r, not a number" % (FACTOR_KEYS[option],
                                                                                   found[0].get("value")))
        return values[0] if len(set(values)) == 1 else None

    def capacity(self, filters):
        return summarise_capacity(self.client.list("listCapacity", "capacity", **filters))


def main():
    Overprovision(argument_spec=dict(
        cpu=dict(type="float"),
        memory=dict(type="float"),
        storage=dict(type="float"),
        cluster=dict(type="str"),
        zone=dict(type="str"),
    ), required_one_of=[("cpu", "memory", "storage")]).run()


if __name__ == "__main__":
    main()
