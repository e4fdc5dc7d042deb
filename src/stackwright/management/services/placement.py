"""Placement: which host and primary storage pool a guest starts on.

First fit over enabled pods and clusters, Up and Enabled hosts, and Up pools; see
`Planner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import select
from sqlalchemy.orm import lazyload
from sqlalchemy.orm.attributes import set_committed_value

from ..errors import InsufficientCapacity
from ..persistence.models import Cluster, Host, StoragePool, Zone

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping, Sequence

    from ..context import Context
    from ..persistence.models import Pod
    from .capacity import Capacity

MiB = 1024 * 1024
GiB = 1024 * MiB
HOST_BATCH = 64         # hosts the planner reads at a time at most
FIRST_HOST_BATCH = 8    # ... and at first, doubling: first fit mostly ends in the first few hosts


@dataclass
class VolumeDemand:
    """A volume of a guest: on its pool already, or `size_bytes` to place on a pool whose
    tags contain all of `tags` (the service offering's for a root volume, the disk
    offering's for a data volume)."""

    kind: str                   # "root" or "data"
    size_bytes: int
    tags: list[str] = field(default_factory=list)
    pool: StoragePool | None = None

    @property
    def tags_from(self) -> str:
        return "service offering" if self.kind == "root" else "disk offering"


@dataclass
class Demand:
    """What a guest needs from a host and, for volumes not placed yet, from pools."""

    cpu_number: int
    cpu_speed: int              # MHz per vCPU
    memory_mb: int
    hypervisor: str
    host_tags: list = field(default_factory=list)
    volume_bytes: int = 0       # size of a root volume still to be placed
    pool: StoragePool | None = None   # the pool the root volume already lives on
    storage_tags: list[str] = field(default_factory=list)   # the root volume's
    data_volumes: list[VolumeDemand] = field(default_factory=list)

    @property
    def cpu_mhz(self) -> int:
        return self.cpu_number * self.cpu_speed

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MiB

    @property
    def volumes(self) -> list[VolumeDemand]:
        """The root volume, then the data volumes."""
        return [VolumeDemand("root", self.volume_bytes, list(self.storage_tags), self.pool), *self.data_volumes]


@dataclass
class Plan:
    host: Host
    pool: StoragePool
    data_pools: list[StoragePool] = field(default_factory=list)   # one per Demand.data_volumes


class Planner:
    """First fit over enabled pods and clusters, Up and Enabled hosts, and Up pools.

    A host fits when its unallocated CPU (cpus x speed x the cluster's CPU over-commit
    ratio, minus what guests hold) and memory (x the memory ratio) cover the demand and
    each of its cores is at least as fast as the offering's; a cluster whose allocation
    would pass its disable thresholds is skipped (`cluster.threshold.enabled`). A pool
    fits when it is Up, reachable from the host's cluster (its own or zone-wide) and its
    allocated bytes plus the volume stay within size x storage.overprovisioning.factor
    and under `pool.storage.allocated.capacity.disablethreshold`.
    Hosts are read in id order a batch at a time, the VM's last host first when asked, and the
    first that fits (with a pool for each volume) is taken, so a plan reads only as many hosts
    as it takes to find one with room. When nothing fits, the error names the first requirement
    no candidate met.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session
        # {cluster id: (CPU, memory) allocated-capacity disable thresholds}, read once per plan.
        self._thresholds: dict[int, tuple[float, float]] = {}

    def plan(self, label: str, zone: Zone, demand: Demand, *, host: Host | None = None, pod: Pod | None = None,
             cluster: Cluster | None = None, last_host_id: int | None = None, avoid_hosts: Collection[int] = (),
             avoid_pools: Collection[int] = (), failures: Sequence[str] = (), ha: bool = False) -> Plan:
        """A host and pool for `demand`. Hosts carrying the `ha.tag` host tag take only HA
        restarts (`ha`), which prefer them, and guests an administrator places there (`host`)."""
        def fail(reason: str, storage: bool = False) -> NoReturn:
            if failures:
                # What went wrong first is the cause; that nothing else fits follows from it.
                reason = "; ".join(failures) + "; and no other host or pool can take it: " + reason
            # InsufficientServerCapacityException (4335) or InsufficientStorageCapacityException (4340)
            raise InsufficientCapacity(f"Unable to create a deployment for {label}: {reason}",
                                       cserrorcode=4340 if storage else 4335)

        if zone.allocation_state != "Enabled":
            fail(f"zone {zone.name} is Disabled; enable it with updateZone allocationstate=Enabled")
        clusters, why = self._clusters(zone, demand.hypervisor, host, pod, cluster)
        if not clusters:
            fail(why)
        ha_tag = self.ctx.settings.get("ha.tag")
        batches = self._host_batches(clusters, host, last_host_id)
        if ha and ha_tag and last_host_id is None:
            # HA restarts are few: the clusters' hosts are read at once, the HA hosts first.
            every = [h for batch, _preferred in batches for h in batch]
            batches = iter([(sorted(every, key=lambda h: ha_tag not in h.tag_list), False)])
        # Hosts of ha.tag take only HA restarts and guests an administrator places there.
        ha_hosts_open = ha or host is not None or not ha_tag
        chosen_pools: dict[int, tuple[list[StoragePool] | None, str | None]] = {}
        raced, refusal, capacity_why = False, None, None
        fitting_clusters: set[int] = set()
        for batch, preferred in batches:
            tagged = [h for h in batch if h.id not in avoid_hosts and set(demand.host_tags) <= set(h.tag_list)
                      and (ha_hosts_open or ha_tag not in h.tag_list)]
            if not tagged:
                continue
            fitting, why = self._with_capacity(tagged, clusters, demand)
            if not fitting:
                # The last host tried first says nothing about the others.
                capacity_why = capacity_why or (None if preferred else why)
                continue
            for candidate in fitting:
                c = clusters[candidate.cluster_id]
                fitting_clusters.add(c.id)
                if c.id not in chosen_pools:
                    chosen_pools[c.id] = self._pools_for(c, demand.volumes, avoid_pools)
                pools, why = chosen_pools[c.id]
                if pools is None:
                    refusal = refusal or why
                    continue
                if self._still_fits(candidate, clusters, demand):
                    # Its cluster as read here (hosts are read without a join to it).
                    set_committed_value(candidate, "cluster", c)
                    return Plan(candidate, pools[0], pools[1:])
                raced = True
        if raced:
            fail("the hosts with room were taken by concurrent deployments; retry")
        if refusal is not None:
            names = ", ".join(sorted(clusters[cid].name for cid in fitting_clusters))
            fail(refusal.replace("{clusters}", names), storage=True)
        if capacity_why is not None:
            fail(capacity_why)
        # No Up, Enabled, tagged host left at all: say which of these it is.
        _hosts, why = self._hosts(zone, clusters, demand, host, avoid_hosts, ha)
        fail(why or f"no host in zone {zone.name} can take the guest")

    def _host_batches(self, clusters: Mapping[int, Cluster], host: Host | None,
                      last_host_id: int | None) -> Iterator[tuple[list[Host], bool]]:
        """Up and Enabled hosts of `clusters` (only `host` when given) in id order, in batches
        growing from FIRST_HOST_BATCH to HOST_BATCH, the last host first on its own (flagged
        True): first fit reads only as many hosts as it takes to find one with room, however
        many the zone has."""
        # A host's cluster is one of `clusters`, already in the session: no join to it per host.
        base = select(Host).options(lazyload(Host.cluster)).where(
            Host.cluster_id.in_(list(clusters)), Host.removed.is_(None), Host.type == "Routing",
            Host.state == "Up", Host.resource_state == "Enabled")
        if host is not None:
            base = base.where(Host.id == host.id)
        elif last_host_id is not None:
            yield self.session.execute(base.where(Host.id == last_host_id)).unique().scalars().all(), True
        after, size = 0, min(FIRST_HOST_BATCH, HOST_BATCH)
        while True:
            rows = self.session.execute(
                base.where(Host.id > after).order_by(Host.id).limit(size)).unique().scalars().all()
            if rows:
                yield rows, False
            if len(rows) < size:
                return
            after, size = rows[-1].id, min(size * 2, HOST_BATCH)

    def _clusters(self, zone: Zone, hypervisor: str, host: Host | None, pod: Pod | None,
                  cluster: Cluster | None) -> tuple[dict[int, Cluster], str | None]:
        q = select(Cluster).where(Cluster.zone_id == zone.id, Cluster.removed.is_(None))
        if host is not None:
            q = q.where(Cluster.id == host.cluster_id)
        if cluster is not None:
            q = q.where(Cluster.id == cluster.id)
        if pod is not None:
            q = q.where(Cluster.pod_id == pod.id)
        rows = self.session.execute(q.order_by(Cluster.id)).unique().scalars().all()
        where = self._where(zone, host, pod, cluster)
        if not rows:
            return {}, f"no cluster in {where}"
        matching = [c for c in rows if c.hypervisor == hypervisor]
        if not matching:
            return {}, f"no {hypervisor} cluster in {where} (the template is for {hypervisor})"
        enabled = [c for c in matching if c.allocation_state == "Enabled" and c.pod.allocation_state == "Enabled"
                   and c.pod.removed is None]
        if not enabled:
            return {}, (f"every {hypervisor} cluster in {where} is Disabled or in a Disabled pod; enable one with "
                        "updateCluster or updatePod allocationstate=Enabled")
        return {c.id: c for c in enabled}, None

    def _hosts(self, zone: Zone, clusters: Mapping[int, Cluster], demand: Demand, host: Host | None,
               avoid: Collection[int], ha: bool = False) -> tuple[list[Host], str | None]:
        q = select(Host).where(Host.cluster_id.in_(list(clusters)), Host.removed.is_(None),
                               Host.type == "Routing")
        if host is not None:
            q = q.where(Host.id == host.id)
        rows = self.session.execute(q.order_by(Host.id)).unique().scalars().all()
        where = self._where(zone, host, None, None)
        usable = [h for h in rows if h.state == "Up" and h.resource_state == "Enabled"]
        if not usable:
            states = ", ".join(f"{h.name} is {h.state}/{h.resource_state}" for h in rows[:5])
            return [], f"no Up and Enabled {demand.hypervisor} host in {where}{f' ({states})' if states else ''}"
        tagged = [h for h in usable if set(demand.host_tags) <= set(h.tag_list)]
        if not tagged:
            return [], (f"no Up and Enabled host in {where} carries the host tags {','.join(demand.host_tags)} "
                        "of the service offering")
        ha_tag = self.ctx.settings.get("ha.tag")
        if ha_tag and host is None and not ha:
            tagged = [h for h in tagged if ha_tag not in h.tag_list]
            if not tagged:
                return [], (f"the only Up and Enabled hosts in {where} carry the HA tag {ha_tag} (ha.tag): they take "
                            "only HA restarts; add a host without it, or name the host (hostid)")
        left = [h for h in tagged if h.id not in avoid]
        if not left:
            return [], f"no other Up and Enabled host left in {where}"
        return left, None

    def _with_capacity(self, hosts: Sequence[Host], clusters: Mapping[int, Cluster],
                       demand: Demand) -> tuple[list[Host], str | None]:
        capacity = self.ctx.capacity
        by_host = capacity.host_capacities(hosts, clusters)
        thresholds_on = self.ctx.settings.typed("cluster.threshold.enabled")
        by_cluster = capacity.cluster_capacities(
            {cid: clusters[cid] for cid in {h.cluster_id for h in hosts}}, usable_only=True) if thresholds_on else {}
        fitting, shortfalls = [], []
        over: dict[int, bool] = {}      # per cluster: its thresholds are read once
        for h in hosts:
            c = clusters[h.cluster_id]
            if (h.cpus or 0) < demand.cpu_number or (h.cpu_speed or 0) < demand.cpu_speed:
                shortfalls.append(f"{h.name} has {h.cpus} CPUs of {h.cpu_speed} MHz")
                continue
            room = by_host[h.id]
            if not room.fits(demand.cpu_mhz, demand.memory_bytes):
                shortfalls.append(
                    f"{h.name} has {max(room.cpu_free, 0)} MHz and {size_text(max(room.memory_free, 0))} free")
                continue
            if thresholds_on and c.id not in over:
                over[c.id] = self._over_threshold(c, by_cluster.get(c.id), demand)
            if thresholds_on and over[c.id]:
                shortfalls.append(f"cluster {c.name} is above its allocated capacity disable threshold")
                continue
            fitting.append(h)
        if not fitting:
            return [], (f"no host has {demand.cpu_number} x {demand.cpu_speed} MHz CPU and "
                        f"{size_text(demand.memory_bytes)} of memory unallocated ({'; '.join(shortfalls[:5])})")
        return fitting, None

    def shortfall(self, host: Host, demand: Demand, lock: bool = False) -> str | None:
        """Why `host` (its cluster's ratios and thresholds) cannot take `demand` now, or None;
        with `lock`, its row is locked first, as a plan locks the host it chose."""
        cluster = self.session.get(Cluster, host.cluster_id)
        if lock:
            self.session.execute(select(Host.id).where(Host.id == host.id).with_for_update())
        fitting, why = self._with_capacity([host], {cluster.id: cluster}, demand)
        return None if fitting else why

    def _still_fits(self, host: Host, clusters: Mapping[int, Cluster], demand: Demand) -> bool:
        """Lock the chosen host's row and check its capacity again: a concurrent plan (MySQL)
        that took it first has committed its guest by the time the lock is granted. One row
        at a time, so plans and heartbeat updates cannot deadlock. On SQLite a write
        transaction holds the database's only write lock from its start (BEGIN IMMEDIATE):
        what this plan read cannot have changed, and the host still fits."""
        if self.session.get_bind().dialect.name == "sqlite":
            return True
        self.session.execute(select(Host.id).where(Host.id == host.id).with_for_update())
        fitting, _shortfall = self._with_capacity([host], clusters, demand)
        return bool(fitting)

    def _over_threshold(self, cluster: Cluster, capacity: Capacity | None, demand: Demand) -> bool:
        if capacity is None:
            return False
        if cluster.id not in self._thresholds:
            config = self.ctx.settings
            self._thresholds[cluster.id] = (
                float(config.scoped_value("cluster.cpu.allocated.capacity.disablethreshold", "cluster", cluster)),
                float(config.scoped_value("cluster.memory.allocated.capacity.disablethreshold", "cluster", cluster)))
        return capacity.beyond(demand.cpu_mhz, demand.memory_bytes, *self._thresholds[cluster.id])

    def volume_pool(self, cluster: Cluster, volume: VolumeDemand, label: str) -> StoragePool:
        """The pool a volume of a guest running in `cluster` goes on (its own when placed), by the
        same rules as a deployment's; InsufficientCapacity (4340) naming why when none fits."""
        pools, why = self._pools_for(cluster, [volume], ())
        if pools is None:
            raise InsufficientCapacity(f"Unable to find storage for {label}: {why.replace('{clusters}', cluster.name)}",
                                       cserrorcode=4340)
        return pools[0]

    def _pools_for(self, cluster: Cluster, volumes: Sequence[VolumeDemand],
                   avoid: Collection[int]) -> tuple[list[StoragePool] | None, str | None]:
        """A pool for each of `volumes` reachable from `cluster` (the placed ones where
        they are; the others first fit on an Up pool carrying all their tags, within size x
        storage.overprovisioning.factor and the allocated disable threshold), or (None, why not)
        with `{clusters}` left to fill in."""
        storage = self.ctx.storage
        reachable = storage.allocatable_pools(cluster)
        reachable_ids = {p.id for p in reachable}
        candidates = [p for p in reachable if p.id not in avoid]
        unplaced = [v for v in volumes if v.pool is None]
        if unplaced:
            allocated = storage.allocated_by_pool([p.id for p in candidates])
            factors = self.ctx.capacity.storage_factors([p.id for p in candidates])
            limit = float(self.ctx.settings.scoped_value(
                "pool.storage.allocated.capacity.disablethreshold", "zone", cluster.zone))
        chosen: list[StoragePool] = []
        for volume in volumes:
            if volume.pool is not None:
                if volume.pool.id not in reachable_ids or volume.pool.id in avoid:
                    return None, (f"storage pool {volume.pool.name} holding the {volume.kind} volume is not Up or not "
                                  f"reachable from any host with capacity (state {volume.pool.state})")
                chosen.append(volume.pool)
                continue
            tagged = [p for p in candidates if set(volume.tags) <= set(p.tag_list)]
            if candidates and not tagged:
                return None, (f"no Up primary storage pool of cluster(s) {{clusters}} (or zone-wide) carries the "
                              f"storage tags {','.join(volume.tags)} of the {volume.tags_from} for the "
                              f"{size_text(volume.size_bytes)} {volume.kind} volume; tag a pool with updateStoragePool "
                              "tags= or add one with createStoragePool")
            for pool in tagged:
                after = allocated.get(pool.id, 0) + volume.size_bytes
                if _room_for(pool, after, factors[pool.id], limit):
                    # Later volumes of the same guest see this one on the pool.
                    allocated[pool.id] = after
                    chosen.append(pool)
                    break
            else:
                with_tags = f" with the storage tags {','.join(volume.tags)}" if volume.tags else ""
                return None, (f"no Up primary storage pool of cluster(s) {{clusters}} (or zone-wide){with_tags} has "
                              f"room for a {size_text(volume.size_bytes)} {volume.kind} volume; add a pool with "
                              "createStoragePool or free space")
        return chosen, None

    def growth_fits(self, pool: StoragePool, extra_bytes: int) -> str | None:
        """Why `pool` cannot take `extra_bytes` more (a volume on it growing), by the rules a
        placement follows; None when it can."""
        allocated = self.ctx.storage.allocated_by_pool([pool.id]).get(pool.id, 0) + extra_bytes
        factor = self.ctx.capacity.storage_factors([pool.id])[pool.id]
        limit = float(self.ctx.settings.scoped_value("pool.storage.allocated.capacity.disablethreshold", "zone",
                                                     self.session.get(Zone, pool.zone_id)))
        if _room_for(pool, allocated, factor, limit):
            return None
        return (f"storage pool {pool.name} has no room for {size_text(extra_bytes)} more (capacity x "
                "storage.overprovisioning.factor, pool.storage.allocated.capacity.disablethreshold)")

    @staticmethod
    def _where(zone: Zone, host: Host | None, pod: Pod | None, cluster: Cluster | None) -> str:
        if host is not None:
            return f"host {host.name}"
        if cluster is not None:
            return f"cluster {cluster.name}"
        if pod is not None:
            return f"pod {pod.name}"
        return f"zone {zone.name}"


def _room_for(pool: StoragePool, allocated_after: int, factor: float, limit: float) -> bool:
    """Whether `pool` holds `allocated_after` bytes within its size x over-provisioning factor and
    under the allocated disable threshold `limit`."""
    total = (pool.capacity_bytes or 0) * factor
    return total > 0 and allocated_after <= total and allocated_after / total <= limit


def size_text(n: int) -> str:
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    return f"{n // MiB} MiB"
