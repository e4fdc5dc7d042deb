"""Capacity: what the infrastructure offers and what is allocated, per zone, pod or cluster.

Arithmetic follows cloudstack-api.md §7. CPU (MHz) and memory (bytes) come from hosts that
are Up and Enabled; their totals are multiplied by each cluster's over-commit detail
(`cpuOvercommitRatio`, `memoryOvercommitRatio`) — the value stored on the cluster, not the
live global setting. Each guest counts as its size ÷ the ratios it was started with × the
cluster's current ratios (a ratio change rates only guests started after it); the guests of
a host that is not Up count nowhere, as its total does not. Primary storage allocated
capacity is the pool size times `storage.overprovisioning.factor` (the pool's own value,
else the global one). Anything in a Disabled zone, pod or cluster, or on a host that is not
Enabled, is left out.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, union_all

from .. import values
from ..formatting import ratio
from ..persistence.models import Cluster, ClusterDetail, ConfigValue, Host, ImageStore, Pod, StoragePool, VmInstance, Zone
from .configuration import CLUSTER_DETAIL_OF
from .vms import HOLDING_CAPACITY, MIGRATING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from sqlalchemy import ColumnElement, CompoundSelect, SQLColumnExpression

    from ..context import Context

    # (zone id, pod id, cluster id) -> the key of the group a row of that place counts in
    KeyOf = Callable[[int, int | None, int | None], int | None]
    Sums = defaultdict[tuple[int, int | None], "_Sum"]

MEMORY, CPU, STORAGE, STORAGE_ALLOCATED, PRIVATE_IP, SECONDARY_STORAGE = 0, 1, 2, 3, 5, 6
TYPE_NAMES = {
    MEMORY: "MEMORY", CPU: "CPU", STORAGE: "STORAGE", STORAGE_ALLOCATED: "STORAGE_ALLOCATED",
    PRIVATE_IP: "PRIVATE_IP", SECONDARY_STORAGE: "SECONDARY_STORAGE",
}
CPU_RATIO, MEMORY_RATIO = "cpuOvercommitRatio", "memoryOvercommitRatio"
STORAGE_FACTOR = "storage.overprovisioning.factor"

ZONE_LEVEL, POD_LEVEL, CLUSTER_LEVEL = "zone", "pod", "cluster"


def decimal(value: float) -> str:
    """A number the way CloudStack's DecimalFormat("#.##") prints it: "12.34", "12.5", "0"."""
    text = f"{value:.2f}"
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def percent(used: float, total: float) -> str:
    """`percentused`: used / total x 100 with at most two decimals; "0" when total is 0."""
    if not total:
        return "0"
    return decimal(used * 100.0 / total)


@dataclass
class Allocation:
    """What guests take of one host: CPU in MHz and memory in bytes."""

    cpu_mhz: int = 0
    memory_bytes: int = 0


_NOTHING = Allocation()


@dataclass(slots=True)
class Capacity:
    """CPU and memory of one host, or of a cluster's hosts together, against what guests take.

    `cpu_mhz` (cpus x speed) and `memory_bytes` are the raw totals; the cluster's over-provisioning
    ratios make them `cpu_total` and `memory_total`, which is what guests can be given. Every
    consumer (placement, listCapacity, the host view) reads these, so they cannot disagree.
    """

    cpu_mhz: int
    memory_bytes: int
    cpu_ratio: float
    memory_ratio: float
    used: Allocation

    @property
    def cpu_total(self) -> float:
        return self.cpu_mhz * self.cpu_ratio

    @property
    def memory_total(self) -> float:
        return self.memory_bytes * self.memory_ratio

    @property
    def cpu_capacity(self) -> int:
        """`cpu_total` in whole MHz, as capacity rows count it."""
        return int(self.cpu_total)

    @property
    def memory_capacity(self) -> int:
        return int(self.memory_total)

    @property
    def cpu_free(self) -> int:
        return self.cpu_capacity - self.used.cpu_mhz

    @property
    def memory_free(self) -> int:
        return self.memory_capacity - self.used.memory_bytes

    def fits(self, cpu_mhz: int, memory_bytes: int) -> bool:
        return self.cpu_free >= cpu_mhz and self.memory_free >= memory_bytes

    def beyond(self, cpu_mhz: int, memory_bytes: int, cpu_limit: float, memory_limit: float) -> bool:
        """Whether taking `cpu_mhz` and `memory_bytes` more passes the fractions `cpu_limit` or
        `memory_limit` of the totals (a zero total has no limit)."""
        cpu_total, memory_total = self.cpu_total, self.memory_total
        return bool((cpu_total and (self.used.cpu_mhz + cpu_mhz) / cpu_total > cpu_limit)
                    or (memory_total and (self.used.memory_bytes + memory_bytes) / memory_total > memory_limit))


def host_capacity(cpus: int | None, cpu_speed: int | None, memory_bytes: int | None, ratios: tuple[float, float],
                  used: Allocation | None = None) -> Capacity:
    """The Capacity of one host from its columns, `ratios` (cpu, memory) of its cluster and
    `used`, the Allocation its guests hold (None: nothing)."""
    return Capacity((cpus or 0) * (cpu_speed or 0), memory_bytes or 0, ratios[0], ratios[1], used or _NOTHING)


def _allocation_query(which: ColumnElement[bool], by: SQLColumnExpression[int]) -> CompoundSelect:
    """CPU and memory guests hold on the hosts `which` selects, summed by `by`, their host's
    cluster and the ratios they were started with (rows of (key, cluster id, CPU ratio, memory
    ratio, MHz, MiB); a key may come several times). Guests hold capacity on their host while
    Starting, Running, Stopping or Migrating, with the sizes copied from the offering at deploy
    time; a migrating guest holds its destination's capacity too, until it has moved."""
    started_with = (VmInstance.details[CPU_RATIO].as_string(), VmInstance.details[MEMORY_RATIO].as_string())
    columns = (by, Host.cluster_id, *started_with,
               func.sum(VmInstance.cpu_number * VmInstance.cpu_speed), func.sum(VmInstance.memory_mb))
    return union_all(
        select(*columns)
        .join(Host, Host.id == VmInstance.host_id)
        .where(which, VmInstance.state.in_(HOLDING_CAPACITY), VmInstance.removed.is_(None))
        .group_by(by, Host.cluster_id, *started_with),
        select(*columns)
        .join(Host, Host.id == VmInstance.migration_host_id)
        .where(which, VmInstance.state == MIGRATING, VmInstance.removed.is_(None))
        .group_by(by, Host.cluster_id, *started_with),
    )


# Built once, as every listHosts page asks for them: what guests hold on a page of hosts in id
# order, by its bounds, and the over-provisioning details of the page's clusters.
_HOSTS_BETWEEN = _allocation_query(Host.id.between(bindparam("first"), bindparam("last")), Host.id)
_CLUSTER_RATIOS = select(ClusterDetail.cluster_id, ClusterDetail.name, ClusterDetail.value).where(
    ClusterDetail.cluster_id.in_(bindparam("ids", expanding=True)),
    ClusterDetail.name.in_((CPU_RATIO, MEMORY_RATIO)))


@dataclass
class _Sum:
    total: int = 0
    used: int = 0


class CapacityService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    # --- per host -------------------------------------------------------------------

    def allocations(self, by: SQLColumnExpression[int], ids: Collection[int],
                    ratios: Mapping[int, tuple[float, float]] | None = None) -> dict[int, Allocation]:
        """{id: Allocation} of the CPU and memory guests take, grouped by `by` (Host.id or
        Host.cluster_id) over `ids`, in one grouped query.

        Guests hold capacity on their host while Starting, Running, Stopping or Migrating;
        their sizes are the ones copied from the offering at deploy time.
        """
        if not ids:
            return {}
        return self._allocations(_allocation_query(by.in_(list(ids)), by), ratios=ratios)

    def _allocations(self, statement: CompoundSelect, params: Mapping[str, Any] | None = None,
                     ratios: Mapping[int, tuple[float, float]] | None = None) -> dict[int, Allocation]:
        """{key: Allocation} from the rows of an `_allocation_query` statement. Each guest counts
        as its size ÷ the ratios it was started with (its details `cpuOvercommitRatio`,
        `memoryOvercommitRatio`) × its cluster's current ratios, so a ratio change rates only
        guests started after it; a guest without recorded ratios counts at its size. The
        clusters' current `ratios` the caller has already (cluster id -> (CPU, memory)) are not
        read again."""
        rows = self.session.execute(statement, params or {}).all()
        known = ratios or {}
        current = {**self.cluster_ratios({row[1] for row in rows} - known.keys()), **known}
        held: dict[int, list[float]] = {}
        for key, cluster_id, cpu_ratio, memory_ratio, cpu, memory in rows:
            cpu_now, memory_now = current[cluster_id]
            sums = held.setdefault(key, [0.0, 0.0])
            # SUM() is a Decimal on MySQL.
            sums[0] += int(cpu or 0) * _rerate(cpu_ratio, cpu_now)
            sums[1] += int(memory or 0) * 1024 * 1024 * _rerate(memory_ratio, memory_now)
        return {key: Allocation(round(cpu), round(memory)) for key, (cpu, memory) in held.items()}

    def host_allocations(self, host_ids: Collection[int]) -> dict[int, Allocation]:
        return self.allocations(Host.id, host_ids)

    def host_allocations_between(self, first_id: int, last_id: int) -> dict[int, Allocation]:
        """{host id: Allocation} for the hosts with ids first_id..last_id: a page of hosts in id
        order is asked for by its bounds, two parameters instead of one per host."""
        return self._allocations(_HOSTS_BETWEEN, {"first": first_id, "last": last_id})

    # --- capacity with over-provisioning ----------------------------------------------

    def ratios(self, cluster: Cluster) -> tuple[float, float]:
        """(CPU, memory) over-provisioning ratios of `cluster`: its own details, else the globals."""
        return self._ratios(cluster.detail)

    def cluster_ratios(self, cluster_ids: Iterable[int]) -> dict[int, tuple[float, float]]:
        """{cluster id: (CPU, memory) ratios} for `cluster_ids`, their details read in one query."""
        details: dict[int, dict[str, str]] = {cid: {} for cid in cluster_ids}
        if not details:
            return {}
        for cluster_id, name, value in self.session.execute(_CLUSTER_RATIOS, {"ids": list(details)}):
            details[cluster_id][name] = value
        return {cid: self._ratios(found.get) for cid, found in details.items()}

    def _ratios(self, detail: Callable[[str], str | None]) -> tuple[float, float]:
        """The ratios from `detail(name)`, a cluster's detail or None; the global setting when None."""
        config = self.ctx.settings
        out = []
        for setting in ("cpu.overprovisioning.factor", "mem.overprovisioning.factor"):
            value = detail(CLUSTER_DETAIL_OF[setting])
            out.append(float(value if value is not None else config.global_value(setting)))
        return tuple(out)

    def host_capacities(self, hosts: Sequence[Host], clusters: Mapping[int, Cluster]) -> dict[int, Capacity]:
        """{host id: Capacity} of Host rows `hosts`; `clusters` maps their cluster ids to Clusters."""
        ratios = {cid: self.ratios(clusters[cid]) for cid in {h.cluster_id for h in hosts}}
        used = self.allocations(Host.id, [h.id for h in hosts], ratios)
        return {h.id: host_capacity(h.cpus, h.cpu_speed, h.memory_bytes, ratios[h.cluster_id], used.get(h.id))
                for h in hosts}

    def cluster_capacities(self, clusters: Mapping[int, Cluster], usable_only: bool = False) -> dict[int, Capacity]:
        """{cluster id: Capacity} of the Up and Enabled hosts of `clusters` (id -> Cluster) taken
        together, against what guests hold on the clusters' Up hosts (with `usable_only`, on
        those Up and Enabled hosts only: what placement's thresholds measure, so that the
        guests of a host being drained do not count twice). A cluster without such hosts has
        no entry."""
        if not clusters:
            return {}
        counted = select(
            Host.cluster_id, func.sum(Host.cpus * Host.cpu_speed), func.sum(Host.memory_bytes)
        ).where(
            Host.cluster_id.in_(list(clusters)), Host.removed.is_(None), Host.type == "Routing",
            Host.state == "Up", Host.resource_state == "Enabled",
        ).group_by(Host.cluster_id)
        # A host that is not Up (Down, Disconnected, Alert) gives neither its total nor its
        # guests' usage until they are stopped or moved.
        which = Host.cluster_id.in_(list(clusters)) & (Host.state == "Up")
        if usable_only:
            which = which & (Host.resource_state == "Enabled")
        ratios = {cid: self.ratios(cluster) for cid, cluster in clusters.items()}
        used = self._allocations(_allocation_query(which, Host.cluster_id), ratios=ratios)
        # SUM() is a Decimal on MySQL: whole numbers first, then the ratios.
        return {cluster_id: Capacity(int(cpu or 0), int(memory or 0), *ratios[cluster_id],
                                     used.get(cluster_id, _NOTHING))
                for cluster_id, cpu, memory in self.session.execute(counted)}

    # --- listCapacity / showcapacities ------------------------------------------------

    def rows(self, zone: Zone | None = None, pod: Pod | None = None, cluster: Cluster | None = None,
             type: int | None = None, sortby: str | None = None) -> list[dict[str, Any]]:
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
        sums: Sums = defaultdict(_Sum)    # (type, group key) -> _Sum

        def key_of(zone_id: int, pod_id: int | None, cluster_id: int | None) -> int | None:
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

    def _scope(self, zone: Zone | None, pod: Pod | None,
               cluster: Cluster | None) -> tuple[dict[int, Zone], dict[int, Pod], dict[int, Cluster]]:
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

    def _compute(self, clusters: Mapping[int, Cluster], key_of: KeyOf, sums: Sums) -> None:
        for cluster_id, capacity in self.cluster_capacities(clusters).items():
            c = clusters[cluster_id]
            k = key_of(c.zone_id, c.pod_id, c.id)
            cpu_sum, mem_sum = sums[(CPU, k)], sums[(MEMORY, k)]
            cpu_sum.total += capacity.cpu_capacity
            mem_sum.total += capacity.memory_capacity
            cpu_sum.used += capacity.used.cpu_mhz
            mem_sum.used += capacity.used.memory_bytes

    def _primary_storage(self, zones: Mapping[int, Zone], pods: Mapping[int, Pod], clusters: Mapping[int, Cluster],
                         key_of: KeyOf, sums: Sums) -> None:
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

    def storage_factors(self, pool_ids: Collection[int]) -> dict[int, float]:
        """{pool id: storage.overprovisioning.factor} — the pool's value, else the global one."""
        default = float(self.ctx.settings.global_value(STORAGE_FACTOR))
        factors = dict.fromkeys(pool_ids, default)
        if pool_ids:
            scoped = self.session.execute(
                select(ConfigValue.resource_id, ConfigValue.value).where(
                    ConfigValue.name == STORAGE_FACTOR, ConfigValue.scope == "storagepool",
                    ConfigValue.resource_id.in_(pool_ids))
            ).all()
            factors.update({pool_id: float(value) for pool_id, value in scoped if value is not None})
        return factors

    def _secondary_storage(self, zones: Mapping[int, Zone], sums: Sums) -> None:
        stores = self.session.execute(
            select(ImageStore.zone_id, func.sum(ImageStore.total_bytes), func.sum(ImageStore.used_bytes))
            .where(ImageStore.zone_id.in_(list(zones)), ImageStore.removed.is_(None))
            .group_by(ImageStore.zone_id)
        ).all()
        for zone_id, total, used in stores:
            s = sums[(SECONDARY_STORAGE, zone_id)]
            s.total += int(total or 0)
            s.used += int(used or 0)


def _rerate(started_with: str | None, now: float) -> float:
    """How much of its size a guest started at ratio `started_with` takes at ratio `now`
    (all of it when it has no readable ratio of at least 1)."""
    try:
        return now / values.parse_decimal(started_with, 1.0)
    except ValueError:
        return 1.0


def started_ratios(ratios: tuple[float, float]) -> dict[str, str]:
    """The VM details that record the (CPU, memory) ratios a guest is started with."""
    return {CPU_RATIO: ratio(ratios[0]), MEMORY_RATIO: ratio(ratios[1])}


def _range_size(start: str | None, end: str | None) -> int:
    try:
        return max(0, int(ipaddress.IPv4Address(end)) - int(ipaddress.IPv4Address(start)) + 1)
    except (ValueError, TypeError):
        return 0


def _row(type_code: int, s: _Sum, zone: Zone, pod: Pod | None = None,
         cluster: Cluster | None = None) -> dict[str, Any]:
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
