"""Placement: which host and primary storage pool a guest starts on.

First fit over enabled pods and clusters, Up and Enabled hosts, and Up pools; see
`Planner`.
"""

from dataclasses import dataclass, field

from sqlalchemy import func, select

from ..errors import InsufficientCapacity
from ..persistence.models import Cluster, Host, StoragePool

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass
class Demand:
    """What a guest needs from a host and, when its root volume is not placed yet, a pool."""

    cpu_number: int
    cpu_speed: int              # MHz per vCPU
    memory_mb: int
    hypervisor: str
    host_tags: list = field(default_factory=list)
    volume_bytes: int = 0       # size of a root volume still to be placed
    pool: StoragePool | None = None   # the pool the root volume already lives on

    @property
    def cpu_mhz(self):
        return self.cpu_number * self.cpu_speed

    @property
    def memory_bytes(self):
        return self.memory_mb * MiB


@dataclass
class Plan:
    host: Host
    pool: StoragePool


class Planner:
    """First fit over enabled pods and clusters, Up and Enabled hosts, and Up pools.

    A host fits when its unallocated CPU (cpus x speed x the cluster's CPU over-commit
    ratio, minus what guests hold) and memory (x the memory ratio) cover the demand and
    each of its cores is at least as fast as the offering's; a cluster whose allocation
    would pass its disable thresholds is skipped (`cluster.threshold.enabled`). A pool
    fits when it is Up, reachable from the host's cluster (its own or zone-wide) and its
    allocated bytes plus the volume stay within size x storage.overprovisioning.factor
    and under `pool.storage.allocated.capacity.disablethreshold`.
    When nothing fits, the error names the first requirement no candidate met.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session

    def plan(self, label, zone, demand, *, host=None, pod=None, cluster=None, last_host_id=None,
             avoid_hosts=(), avoid_pools=(), failures=()):
        def fail(reason, storage=False):
            if failures:
                reason += "; earlier attempts: " + "; ".join(failures)
            # InsufficientServerCapacityException (4335) or InsufficientStorageCapacityException (4340)
            raise InsufficientCapacity("Unable to create a deployment for %s: %s" % (label, reason),
                                       cserrorcode=4340 if storage else 4335)

        if zone.allocation_state != "Enabled":
            fail("zone %s is Disabled; enable it with updateZone allocationstate=Enabled" % zone.name)
        clusters, why = self._clusters(zone, demand.hypervisor, host, pod, cluster)
        if not clusters:
            fail(why)
        hosts, why = self._hosts(zone, clusters, demand, host, avoid_hosts)
        if not hosts:
            fail(why)
        fitting, why = self._with_capacity(hosts, clusters, demand)
        if not fitting:
            fail(why)
        if last_host_id is not None:
            fitting.sort(key=lambda h: h.id != last_host_id)
        chosen_pools, raced = {}, False
        for candidate in fitting:
            c = clusters[candidate.cluster_id]
            if c.id not in chosen_pools:
                chosen_pools[c.id] = self._pool_for(c, demand, avoid_pools)
            pool = chosen_pools[c.id]
            if pool is None:
                continue
            if self._still_fits(candidate, clusters, demand):
                return Plan(candidate, pool)
            raced = True
        if raced:
            fail("the hosts with room were taken by concurrent deployments; retry")
        if demand.pool is not None:
            fail("storage pool %s holding the root volume is not Up or not reachable from any host with "
                 "capacity (state %s)" % (demand.pool.name, demand.pool.state), storage=True)
        names = ", ".join(sorted({clusters[h.cluster_id].name for h in fitting}))
        fail("no Up primary storage pool of cluster(s) %s (or zone-wide) has room for a %s root volume; add "
             "a pool with createStoragePool or free space" % (names, size_text(demand.volume_bytes)), storage=True)

    def _clusters(self, zone, hypervisor, host, pod, cluster):
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
            return {}, "no cluster in %s" % where
        matching = [c for c in rows if c.hypervisor == hypervisor]
        if not matching:
            return {}, "no %s cluster in %s (the template is for %s)" % (hypervisor, where, hypervisor)
        enabled = [c for c in matching if c.allocation_state == "Enabled" and c.pod.allocation_state == "Enabled"
                   and c.pod.removed is None]
        if not enabled:
            return {}, ("every %s cluster in %s is Disabled or in a Disabled pod; enable one with updateCluster "
                        "or updatePod allocationstate=Enabled" % (hypervisor, where))
        return {c.id: c for c in enabled}, None

    def _hosts(self, zone, clusters, demand, host, avoid):
        q = select(Host).where(Host.cluster_id.in_(list(clusters)), Host.removed.is_(None),
                               Host.type == "Routing")
        if host is not None:
            q = q.where(Host.id == host.id)
        rows = self.session.execute(q.order_by(Host.id)).unique().scalars().all()
        where = self._where(zone, host, None, None)
        usable = [h for h in rows if h.state == "Up" and h.resource_state == "Enabled"]
        if not usable:
            states = ", ".join("%s is %s/%s" % (h.name, h.state, h.resource_state) for h in rows[:5])
            return [], "no Up and Enabled %s host in %s%s" % (
                demand.hypervisor, where, " (%s)" % states if states else "")
        tagged = [h for h in usable if set(demand.host_tags) <= set(h.tag_list)]
        if not tagged:
            return [], "no Up and Enabled host in %s carries the host tags %s of the service offering" % (
                where, ",".join(demand.host_tags))
        left = [h for h in tagged if h.id not in avoid]
        if not left:
            return [], "no other Up and Enabled host left in %s" % where
        return left, None

    def _with_capacity(self, hosts, clusters, demand):
        capacity = self.ctx.capacity
        config = self.ctx.configuration
        by_host = capacity.host_allocations([h.id for h in hosts])
        by_cluster = capacity.usable_allocations(Host.cluster_id, list({h.cluster_id for h in hosts}))
        thresholds_on = self.ctx.config.typed("cluster.threshold.enabled")
        cluster_totals = self._cluster_totals(clusters) if thresholds_on else {}
        fitting, shortfalls = [], []
        for h in hosts:
            c = clusters[h.cluster_id]
            if (h.cpus or 0) < demand.cpu_number or (h.cpu_speed or 0) < demand.cpu_speed:
                shortfalls.append("%s has %s CPUs of %s MHz" % (h.name, h.cpus, h.cpu_speed))
                continue
            used = by_host.get(h.id)
            used_cpu, used_memory = (used.cpu_mhz, used.memory_bytes) if used else (0, 0)
            cpu_total = int(h.cpus * h.cpu_speed * config.cluster_ratio(c, "cpu.overprovisioning.factor"))
            memory_total = int((h.memory_bytes or 0) * config.cluster_ratio(c, "mem.overprovisioning.factor"))
            cpu_free, memory_free = cpu_total - used_cpu, memory_total - used_memory
            if cpu_free < demand.cpu_mhz or memory_free < demand.memory_bytes:
                shortfalls.append("%s has %d MHz and %s free" % (h.name, max(cpu_free, 0), size_text(max(memory_free, 0))))
                continue
            if thresholds_on and self._over_threshold(c, by_cluster.get(c.id), cluster_totals.get(c.id), demand):
                shortfalls.append("cluster %s is above its allocated capacity disable threshold" % c.name)
                continue
            fitting.append(h)
        if not fitting:
            return [], "no host has %d x %d MHz CPU and %s of memory unallocated (%s)" % (
                demand.cpu_number, demand.cpu_speed, size_text(demand.memory_bytes), "; ".join(shortfalls[:5]))
        return fitting, None

    def shortfall(self, host, demand, lock=False):
        """Why `host` (its cluster's ratios and thresholds) cannot take `demand` now, or None;
        with `lock`, its row is locked first, as a plan locks the host it chose."""
        cluster = self.session.get(Cluster, host.cluster_id)
        if lock:
            self.session.execute(select(Host.id).where(Host.id == host.id).with_for_update())
        fitting, why = self._with_capacity([host], {cluster.id: cluster}, demand)
        return None if fitting else why

    def _still_fits(self, host, clusters, demand):
        """Lock the chosen host's row and check its capacity again: a concurrent plan (MySQL)
        that took it first has committed its guest by the time the lock is granted. One row
        at a time, so plans and heartbeat updates cannot deadlock."""
        self.session.execute(select(Host.id).where(Host.id == host.id).with_for_update())
        fitting, _shortfall = self._with_capacity([host], clusters, demand)
        return bool(fitting)

    def _cluster_totals(self, clusters):
        rows = self.session.execute(
            select(Host.cluster_id, func.sum(Host.cpus * Host.cpu_speed), func.sum(Host.memory_bytes)).where(
                Host.cluster_id.in_(list(clusters)), Host.removed.is_(None), Host.state == "Up",
                Host.resource_state == "Enabled").group_by(Host.cluster_id)
        ).all()
        return {cid: (int(cpu or 0), int(memory or 0)) for cid, cpu, memory in rows}

    def _over_threshold(self, cluster, used, totals, demand):
        if not totals:
            return False
        config = self.ctx.configuration
        cpu_total = totals[0] * config.cluster_ratio(cluster, "cpu.overprovisioning.factor")
        memory_total = totals[1] * config.cluster_ratio(cluster, "mem.overprovisioning.factor")
        used_cpu, used_memory = (used.cpu_mhz, used.memory_bytes) if used else (0, 0)
        cpu_limit = float(config.scoped_value("cluster.cpu.allocated.capacity.disablethreshold", "cluster", cluster))
        memory_limit = float(config.scoped_value("cluster.memory.allocated.capacity.disablethreshold", "cluster",
                                                 cluster))
        return ((cpu_total and (used_cpu + demand.cpu_mhz) / cpu_total > cpu_limit)
                or (memory_total and (used_memory + demand.memory_bytes) / memory_total > memory_limit))

    def _pool_for(self, cluster, demand, avoid):
        storage = self.ctx.storage
        if demand.pool is not None:
            reachable = {p.id for p in storage.allocatable_pools(cluster)}
            return demand.pool if demand.pool.id in reachable and demand.pool.id not in avoid else None
        pools = [p for p in storage.allocatable_pools(cluster) if p.id not in avoid]
        if not pools:
            return None
        allocated = storage.allocated_by_pool([p.id for p in pools])
        factors = self.ctx.capacity.storage_factors([p.id for p in pools])
        limit = float(self.ctx.configuration.scoped_value(
            "pool.storage.allocated.capacity.disablethreshold", "zone", cluster.zone))
        for pool in pools:
            total = (pool.capacity_bytes or 0) * factors[pool.id]
            after = allocated.get(pool.id, 0) + demand.volume_bytes
            if total > 0 and after <= total and after / total <= limit:
                return pool
        return None

    @staticmethod
    def _where(zone, host, pod, cluster):
        if host is not None:
            return "host %s" % host.name
        if cluster is not None:
            return "cluster %s" % cluster.name
        if pod is not None:
            return "pod %s" % pod.name
        return "zone %s" % zone.name


def size_text(n):
    if n >= GiB and n % GiB == 0:
        return "%d GiB" % (n // GiB)
    return "%d MiB" % (n // MiB)
