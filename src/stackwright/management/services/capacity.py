"""Capacity: what the infrastructure offers and what is allocated, per zone, pod or cluster.

Arithmetic follows cloudstack-api.md §7. CPU (MHz) and memory (bytes) come from hosts that
are Up and Enabled; their totals are multiplied by each cluster's over-commit detail
(`cpuOvercommitRatio`, `memoryOvercommitRatio`) — the value stored on the cluster, not the
live global setting. Primary storage allocated capacity is the pool size times
`storage.overprovisioning.factor` (the pool's own value, else the global one). Anything in
a Disabled zone, pod or cluster, or on a host that is not Enabled, is left out.
"""

import ipaddress
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from ..persistence.models import Cluster, ConfigValue, Host, ImageStore, Pod, StoragePool, VmInstance, Zone
from .vms import HOLDING_CAPACITY, MIGRATING

MEMORY, CPU, STORAGE, STORAGE_ALLOCATED, PRIVATE_IP, SECONDARY_STORAGE = 0, 1, 2, 3, 5, 6
TYPE_NAMES = {
    MEMORY: "MEMORY", CPU: "CPU", STORAGE: "STORAGE", STORAGE_ALLOCATED: "STORAGE_ALLOCATED",
    PRIVATE_IP: "PRIVATE_IP", SECONDARY_STORAGE: "SECONDARY_STORAGE",
}
CPU_RATIO, MEMORY_RATIO = "cpuOvercommitRatio", "memoryOvercommitRatio"
STORAGE_FACTOR = "storage.overprovisioning.factor"

ZONE_LEVEL, POD_LEVEL, CLUSTER_LEVEL = "zone", "pod", "cluster"


def decimal(value):
    """A number the way CloudStack's DecimalFormat("#.##") prints it: "12.34", "12.5", "0"."""
    text = "%.2f" % value
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def percent(used, total):
    """`percentused`: used / total x 100 with at most two decimals; "0" when total is 0."""
    if not total:
        return "0"
    return decimal(used * 100.0 / total)


@dataclass
class Allocation:
    """What guests take of one host: CPU in MHz and memory in bytes."""

    cpu_mhz: int = 0
    memory_bytes: int = 0


@dataclass
class _Sum:
    total: int = 0
    used: int = 0


class CapacityService:
    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session

    # --- per host -------------------------------------------------------------------

    def allocations(self, by, ids):
        """{id: Allocation} of the CPU and memory guests take, grouped by `by` (Host.id or
        Host.cluster_id) over `ids`, in one grouped query.

        Guests hold capacity on their host while Starting, Running, Stopping or Migrating;
        their sizes are the ones copied from the offering at deploy time.
        """
        if not ids:
            return {}
        return self._allocations(by.in_(list(ids)), by)

    def usable_allocations(self, by, ids):
        """`allocations`, counting only guests on Up and Enabled hosts: the hosts whose capacity
        makes the totals thresholds are measured against."""
        if not ids:
            return {}
        return self._allocations(by.in_(list(ids)) & (Host.state == "Up") & (Host.resource_state == "Enabled"), by)

    def _allocations(self, which, by):
        sums = (func.sum(VmInstance.cpu_number * VmInstance.cpu_speed), func.sum(VmInstance.memory_mb))
        rows = self.session.execute(
            select(by, *sums)
            .join(Host, Host.id == VmInstance.host_id)
            .where(which, VmInstance.state.in_(HOLDING_CAPACITY), VmInstance.removed.is_(None))
            .group_by(by)
        ).all()
        # A migrating guest holds its destination's capacity too, until it has moved.
        rows += self.session.execute(
            select(by, *sums)
            .join(Host, Host.id == VmInstance.migration_host_id)
            .where(which, VmInstance.state == MIGRATING, VmInstance.removed.is_(None))
            .group_by(by)
        ).all()
        allocations = {}
        for key, cpu, memory in rows:
            # SUM() is a Decimal on MySQL.
            held = allocations.setdefault(key, Allocation())
            held.cpu_mhz += int(cpu or 0)
            held.memory_bytes += int(memory or 0) * 1024 * 1024
        return allocations

    def host_allocations(self, host_ids):
        return self.allocations(Host.id, host_ids)

    def host_allocations_between(self, first_id, last_id):
        """{host id: Allocation} for the hosts with ids first_id..last_id: a page of hosts in id
        order is asked for by its bounds, two parameters instead of one per host."""
        return self._allocations(Host.id.between(first_id, last_id), Host.id)

    # --- listCapacity / showcapacities ------------------------------------------------

    def rows(self, zone=None, pod=None, cluster=None, type=None, sortby=None):
        """Capacity rows (API dicts) for the most specific scope given, one per entity and type."""
        level = CLUSTER_LEVEL if cluster is not None else POD_LEVEL if pod is not None else ZONE_LEVEL
        zones, pods, clusters = self._scope(zone, pod, cluster)
        if level == ZONE_LEVEL:
            groups = list(zones.values())
        elif level == POD_LEVEL:
            groups = [(z, p) for z, p in ((zones.get(p.zone_id), p) for p in pods.values()) if z is not None]
        else:
            groups = [(zones[c.zone_id], pods[c.pod_id], c) for c in clusters.values()
                      if c.zone_id in zones and c.pod_id in pods]
        wanted = [t for t in TYPE_NAMES if type is None or t == type]
        if level != ZONE_LEVEL:
            wanted = [t for t in wanted if t != SECONDARY_STORAGE]
        if level == CLUSTER_LEVEL:
            wanted = [t for t in wanted if t != PRIVATE_IP]
        if not groups or not wanted:
            return []
        sums = defaultdict(_Sum)          # (type, group key) -> _Sum

        def key_of(zone_id, pod_id, cluster_id):
            return {ZONE_LEVEL: zone_id, POD_LEVEL: pod_id, CLUSTER_LEVEL: cluster_id}[level]

        if CPU in wanted or MEMORY in wanted:
            self._compute(clusters, key_of, sums)
        if STORAGE in wanted or STORAGE_ALLOCATED in wanted:
            self._primary_storage(zones, pods, clusters, key_of, sums)
        if SECONDARY_STORAGE in wanted:
            self._secondary_storage(zones, sums)
        if PRIVATE_IP in wanted:
            for p in pods.values():
                sums[(PRIVATE_IP, key_of(p.zone_id, p.id, None))].total += _range_size(p.start_ip, p.end_ip)

        out = []
        for group in groups:
            if level == ZONE_LEVEL:
                z, p, c = group, None, None
            elif level == POD_LEVEL:
                (z, p), c = group, None
            else:
                z, p, c = group
            group_key = (c or p or z).id
            for t in wanted:
                s = sums.get((t, group_key), _Sum())
                out.append(_row(t, s, z, p, c))
        if sortby == "usage":
            out.sort(key=lambda r: float(r["percentused"]), reverse=True)
        return out

    def _scope(self, zone, pod, cluster):
        """Enabled, live zones/pods/clusters within the requested scope, by id."""
        zq = select(Zone).where(Zone.removed.is_(None), Zone.allocation_state == "Enabled")
        pq = select(Pod).where(Pod.removed.is_(None), Pod.allocation_state == "Enabled")
        cq = select(Cluster).where(Cluster.removed.is_(None), Cluster.allocation_state == "Enabled")
        if zone is not None:
            zq, pq, cq = zq.where(Zone.id == zone.id), pq.where(Pod.zone_id == zone.id), cq.where(Cluster.zone_id == zone.id)
        if pod is not None:
            zq, pq, cq = zq.where(Zone.id == pod.zone_id), pq.where(Pod.id == pod.id), cq.where(Cluster.pod_id == pod.id)
        if cluster is not None:
            zq = zq.where(Zone.id == cluster.zone_id)
            pq = pq.where(Pod.id == cluster.pod_id)
            cq = cq.where(Cluster.id == cluster.id)
        zones = {z.id: z for z in self.session.execute(zq).scalars()}
        pods = {p.id: p for p in self.session.execute(pq).unique().scalars() if p.zone_id in zones}
        clusters = {c.id: c for c in self.session.execute(cq).unique().scalars() if c.pod_id in pods}
        return zones, pods, clusters

    def _compute(self, clusters, key_of, sums):
        if not clusters:
            return
        counted = select(
            Host.cluster_id, func.sum(Host.cpus * Host.cpu_speed), func.sum(Host.memory_bytes)
        ).where(
            Host.cluster_id.in_(list(clusters)), Host.removed.is_(None), Host.type == "Routing",
            Host.state == "Up", Host.resource_state == "Enabled",
        ).group_by(Host.cluster_id)
        used = self.allocations(Host.cluster_id, list(clusters))
        config = self.ctx.configuration
        for cluster_id, cpu, memory in self.session.execute(counted):
            c = clusters[cluster_id]
            k = key_of(c.zone_id, c.pod_id, c.id)
            cpu_sum, mem_sum = sums[(CPU, k)], sums[(MEMORY, k)]
            # SUM() is a Decimal on MySQL: whole numbers first, then the ratio.
            cpu_sum.total += int(int(cpu or 0) * config.cluster_ratio(c, "cpu.overprovisioning.factor"))
            mem_sum.total += int(int(memory or 0) * config.cluster_ratio(c, "mem.overprovisioning.factor"))
            taken = used.get(cluster_id)
            if taken is not None:
                cpu_sum.used += taken.cpu_mhz
                mem_sum.used += taken.memory_bytes

    def _primary_storage(self, zones, pods, clusters, key_of, sums):
        pools = self.session.execute(
            select(StoragePool).where(StoragePool.zone_id.in_(list(zones)), StoragePool.removed.is_(None),
                                      StoragePool.state == "Up")
        ).scalars().all()
        pools = [p for p in pools
                 if (p.pod_id is None or p.pod_id in pods) and (p.cluster_id is None or p.cluster_id in clusters)]
        factors = self.storage_factors([p.id for p in pools])
        allocated = self.ctx.storage.allocated_by_pool([p.id for p in pools])
        for pool in pools:
            k = key_of(pool.zone_id, pool.pod_id, pool.cluster_id)
            if k is None:
                continue   # a zone-wide pool has no pod or cluster row
            used = sums[(STORAGE, k)]
            used.total += pool.capacity_bytes or 0
            used.used += pool.used_bytes or 0
            allocated_row = sums[(STORAGE_ALLOCATED, k)]
            allocated_row.total += int((pool.capacity_bytes or 0) * factors[pool.id])
            allocated_row.used += allocated.get(pool.id, 0)

    def storage_factors(self, pool_ids):
        """{pool id: storage.overprovisioning.factor} — the pool's value, else the global one."""
        default = float(self.ctx.configuration.global_value(STORAGE_FACTOR))
        factors = dict.fromkeys(pool_ids, default)
        if pool_ids:
            scoped = self.session.execute(
                select(ConfigValue.resource_id, ConfigValue.value).where(
                    ConfigValue.name == STORAGE_FACTOR, ConfigValue.scope == "storagepool",
                    ConfigValue.resource_id.in_(pool_ids))
            ).all()
            factors.update({pool_id: float(value) for pool_id, value in scoped if value is not None})
        return factors

    def _secondary_storage(self, zones, sums):
        stores = self.session.execute(
            select(ImageStore.zone_id, func.sum(ImageStore.total_bytes), func.sum(ImageStore.used_bytes))
            .where(ImageStore.zone_id.in_(list(zones)), ImageStore.removed.is_(None))
            .group_by(ImageStore.zone_id)
        ).all()
        for zone_id, total, used in stores:
            s = sums[(SECONDARY_STORAGE, zone_id)]
            s.total += int(total or 0)
            s.used += int(used or 0)


def _range_size(start, end):
    try:
        return max(0, int(ipaddress.IPv4Address(end)) - int(ipaddress.IPv4Address(start)) + 1)
    except (ValueError, TypeError):
        return 0


def _row(type_code, s, zone, pod=None, cluster=None):
    row = {
        "type": type_code,
        "name": TYPE_NAMES[type_code],
        "zoneid": zone.uuid,
        "zonename": zone.name,
    }
    if pod is not None:
        row["podid"], row["podname"] = pod.uuid, pod.name
    if cluster is not None:
        row["clusterid"], row["clustername"] = cluster.uuid, cluster.name
    row["capacitytotal"] = s.total
    row["capacityused"] = s.used
    if type_code in (CPU, MEMORY, STORAGE_ALLOCATED):
        row["capacityallocated"] = s.used
    row["percentused"] = percent(s.used, s.total)
    return row
