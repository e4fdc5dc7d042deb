"""What the hosts' agents tell the engine, written to the database.

The agent channel (`stackwright.management.agentlink`) hears registrations, heartbeats,
silences, guest reports and the answers to storage commands; this service records them
through the host, storage and VM services. Every method runs in a worker thread, in a
transaction of its own, and is written for thousands of hosts: registrations come in
batches (one transaction, a savepoint each), heartbeats as one executemany.

The host key of a channel session is the agent's guid.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import lazyload

from stackwright.protocol import messages as m

from .. import values
from ..context import Context
from . import alerts
from .cluster import EXTERNAL, owned_by
from .storage import WAITING
from .vms import pool_spec
from ..persistence.models import Cluster, Host, ImageStore, Pod, StoragePool, VmInstance, Zone, utcnow

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from datetime import datetime

    from sqlalchemy import Row
    from sqlalchemy.orm import Session
    from ..engine import Engine

log = logging.getLogger(__name__)

CHUNK = 500     # guids per IN (...) list


class AgentRefused(Exception):
    """A registering agent is turned away; the message reaches the agent's log."""


class RegistrationService:
    """Registrations, heartbeats and reports of the hosts' agents, on an engine's database."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.db = engine.db

    def _context(self, session: Session):
        return Context(self.engine, session, None, "agent")

    def _host(self, s: Session, guid: str):
        return s.execute(select(Host).where(Host.guid == guid, Host.removed.is_(None))).scalar_one_or_none()

    # --- start and shutdown ---------------------------------------------------------------

    @property
    def msid(self) -> int:
        return self.engine.cluster.me.msid

    def hosts_served(self) -> Sequence[str]:
        """Guids of the hosts whose agents were connected to this server (or to none that is
        alive) before this start: the heartbeat monitor judges them Down when they do not come
        back, as it would a silent one. Hosts of live peers are theirs to judge."""
        return self.engine.cluster.served_hosts()

    def simulated_hosts(self) -> list[tuple[str, str]]:
        """(guid, url) of the Simulator hosts whose simulated agent runs in this engine: its own
        and those no live server runs (claimed). Hosts whose simulated agent runs elsewhere
        reconnect by themselves; a second, in-engine agent with the same guid would keep
        replacing their connection."""
        return self.engine.cluster.claim_simulated_hosts()

    def disconnect_all(self, guids: Sequence[str]) -> None:
        """At shutdown: every host whose agent was connected here (and is not served by another
        server by now) is Disconnected, in one transaction."""
        if not guids:
            return
        now = utcnow()
        with self.db.transaction() as s:
            for start in range(0, len(guids), CHUNK):
                chunk = guids[start:start + CHUNK]
                s.execute(update(Host).where(Host.guid.in_(chunk), Host.removed.is_(None), Host.state != "Disconnected",
                                             owned_by(self.msid))
                          .values(state="Disconnected", disconnected=func.coalesce(Host.disconnected, now))
                          .execution_options(synchronize_session=False))
        log.info("%d host(s) left Disconnected at shutdown", len(guids))

    # --- registration -------------------------------------------------------------------

    def register_many(self, requests: Sequence[m.RegisterRequest]) -> list[tuple[str | None, str] | Exception]:
        """Match registering agents to their hosts in one transaction, each in a savepoint of its own: one refusal does
        not undo the others. Returns, per request, (host uuid or None, host name) or the error."""
        results: list[tuple[str | None, str] | Exception] = []
        with self.db.transaction() as s:
            # Read once for the whole batch: the hosts by guid, and (as they are needed) the
            # zones, pods and clusters that agents name.
            known = {}
            guids = {r.guid for r in requests}
            for host in s.execute(_LIGHT_HOST.where(Host.guid.in_(guids)).order_by(Host.id)).scalars():
                known.setdefault(host.guid, host)
            places = {}
            for request in requests:
                try:
                    with s.begin_nested():
                        results.append(self._register_in(s, request, known, places))
                except Exception as e:  # noqa: BLE001 - handed to that agent's session
                    results.append(e)
        return results

    def _register_in(self, s: Session, request: m.RegisterRequest, known: dict[str, Host],
                     places: dict[tuple[str, int], Row]) -> tuple[str | None, str]:
        hosts = self._context(s).hosts
        host = known.get(request.guid)
        if host is None and request.host.private_ip:
            host = s.execute(
                _LIGHT_HOST.where(Host.ip_address == request.host.private_ip, Host.guid.is_(None),
                                  Host.hypervisor == request.host.hypervisor)
            ).scalars().first()
        if host is None and request.host.hypervisor == "Simulator":
            host = _adopt_simulated(s, request)
        if host is None:
            return None, ""
        _check_location(s, host, request, places)
        hosts.agent_connected(host, request.host, guid=request.guid, agent_version=request.agent_version)
        host.mgmt_server_id = self.msid
        known[request.guid] = host  # the same agent twice in one batch finds the host it now has
        return host.uuid, host.name

    # --- heartbeats and silences ------------------------------------------------------------

    def host_state(self, guid: str, state: str) -> str | None:
        """Host `guid` is `state` by its agent's connection or pings; returns its new state
        (None when there is no such host)."""
        with self.db.transaction() as s:
            host = self._host(s, guid)
            if host is None:
                return None
            if host.mgmt_server_id not in (None, self.msid):
                # Its agent is connected to another server now: that server judges it.
                return host.state
            ctx = self._context(s)
            if state == "Up":
                ctx.hosts.agent_pinged(host)
            else:
                ctx.hosts.agent_lost(host, state)
            new = host.state
        ctx.run_after_commit()      # HA work it gave the job workers
        return new

    def record_heartbeats(self, pings: Mapping[str, int], recovered: Collection[str]) -> None:
        """`pings`: {guid: epoch seconds of its last ping}; `recovered`: guids of hosts that
        were Alert or Disconnected and pinged again (they are Up again)."""
        if not pings and not recovered:
            return
        # One executemany of a plain statement: thousands of hosts a second at short intervals.
        table = Host.__table__
        statement = (update(table).where(table.c.guid == bindparam("g"), table.c.removed.is_(None))
                     .values(last_pinged=bindparam("w")))
        with self.db.transaction() as s:
            if pings:
                s.connection().execute(statement, [{"g": guid, "w": when} for guid, when in pings.items()])
            guids = sorted(recovered)
            for start in range(0, len(guids), CHUNK):
                s.execute(update(Host).where(Host.guid.in_(guids[start:start + CHUNK]), Host.removed.is_(None),
                                             owned_by(self.msid),
                                             Host.state.in_(("Alert", "Disconnected", "Connecting")))
                          .values(state="Up", disconnected=None).execution_options(synchronize_session=False))
        if recovered:
            log.info("%d host(s) Up again after their pings resumed", len(recovered))

    # --- guests reported by agents -------------------------------------------------------------

    def _has_guests(self, guid: str):
        with self.db.transaction(readonly=True) as s:
            return s.execute(
                select(VmInstance.id).join(Host, VmInstance.host_id == Host.id)
                .where(Host.guid == guid, Host.removed.is_(None), VmInstance.removed.is_(None)).limit(1)
            ).first() is not None

    def reconcile_vms(self, guid: str, reported: Mapping[str, str], received: datetime) -> bool:
        """Host `guid` reported its guests ({instance name: state}) at `received`: the VM
        service reconciles them. False when the same report must be looked at again (a job
        is moving one of the host's VMs, or the reconciliation failed)."""
        if not reported and not self._has_guests(guid):
            return True  # nothing reported, nothing recorded: no write (a reconnect storm sends thousands)
        try:
            with self.db.transaction() as s:
                host = self._host(s, guid)
                if host is None:
                    return True
                ctx = self._context(s)
                settled = ctx.vms.reconcile(host, reported, reported_at=received)
            ctx.run_after_commit()      # HA restarts and stops of stale copies it gave the job workers
            return settled
        except Exception:
            log.exception("could not reconcile the guests reported by host %s; retrying on its next ping", guid)
            return False

    # --- storage the agents attach and check ------------------------------------------------------

    def pools_to_attach(self, guid: str) -> list[str]:
        """Uuids of the primary pools host `guid` attaches when it registers."""
        with self.db.transaction(readonly=True) as s:
            host = self._host(s, guid)
            if host is None or host.hypervisor == "Simulator":
                # Pools of Simulator clusters are simulated by the storage service (Up at creation,
                # with their configured capacity); an attach would overwrite those figures.
                return []
            pools = self._context(s).storage.pools_for_host(host)
            return [p.uuid for p in pools if p.url.lower().startswith("nfs://")]

    def pool_spec(self, pool_uuid: str) -> m.PoolSpec | None:
        """What an agent needs to attach pool `pool_uuid`; None when it is gone."""
        with self.db.transaction(readonly=True) as s:
            pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
            if pool is None or pool.removed is not None:
                return None
            return pool_spec(pool)

    def pool_result(self, pool_uuid: str, stats: m.PoolStats | None, message: str | None) -> None:
        """A host attached the pool (`stats`: its figures) or could not (`message`)."""
        with self.db.transaction() as s:
            pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
            if pool is None or pool.removed is not None:
                return
            storage = self._context(s).storage
            if stats is not None:
                storage.pool_attached(pool, stats.capacity_bytes, stats.used_bytes)
            else:
                storage.pool_unreachable(pool, message)

    # --- primary storage outages -------------------------------------------------------------------

    def pool_check_interval(self) -> float:
        """Seconds between two checks of the primary pools: storage.stats.interval (ms)."""
        try:
            return max(1.0, values.parse_decimal(self.engine.settings.get("storage.stats.interval")) / 1000)
        except (TypeError, ValueError):
            return 60.0

    def pools_to_check(self) -> list[tuple[m.PoolSpec, bool, list[str]]]:
        """The NFS pools of KVM clusters the engine watches, each with whether it is Up (else it
        is waiting to be reached again) and the guids of its cluster's Up hosts that may look."""
        with self.db.transaction(readonly=True) as s:
            pools = s.execute(select(StoragePool).where(
                StoragePool.removed.is_(None), StoragePool.state.in_(("Up", WAITING)),
                StoragePool.cluster_id.is_not(None)).order_by(StoragePool.id)).scalars().all()
            checks = []
            for pool in pools:
                if not pool.url.lower().startswith("nfs://"):
                    continue
                guids = s.execute(select(Host.guid).where(
                    Host.cluster_id == pool.cluster_id, Host.removed.is_(None), Host.state == "Up",
                    Host.hypervisor == "KVM", Host.guid.is_not(None)).order_by(Host.id)).scalars().all()
                if guids:
                    checks.append((pool_spec(pool), pool.state == "Up", list(guids)))
            return checks

    def pool_lost(self, pool_uuid: str, message: str) -> None:
        """An Up pool stopped answering its hosts: out of allocation, with an alert, once."""
        with self.db.transaction() as s:
            pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
            if pool is None or pool.removed is not None or pool.state != "Up":
                return
            self._context(s).storage.pool_unreachable(pool, f"{message}; its guests pause until it answers again")

    def pool_answered(self, pool_uuid: str, stats: m.PoolStats) -> list[str]:
        """A host reached the pool. When it was not Up (an outage, or never attached), it is
        Up again: the guids of the hosts of its cluster whose guests to resume."""
        with self.db.transaction() as s:
            pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
            if pool is None or pool.removed is not None:
                return []
            was = pool.state
            ctx = self._context(s)
            ctx.storage.pool_attached(pool, stats.capacity_bytes, stats.used_bytes)
            if was == "Up":
                return []
            ctx.alerts.raise_alert(alerts.STORAGE_MISC, f"Storage pool {pool.name} ({pool.uuid}) answers again; "
                                                        f"guests paused by its outage are resumed",
                                   zone_id=pool.zone_id, pod_id=pool.pod_id, cluster_id=pool.cluster_id,
                                   resource_uuid=pool.uuid)
            return list(s.execute(select(Host.guid).where(
                Host.cluster_id == pool.cluster_id, Host.removed.is_(None), Host.state == "Up",
                Host.guid.is_not(None))).scalars())

    def guests_io_paused(self, guid: str, names: Sequence[str]) -> None:
        """Host `guid` reports guests newly paused by storage errors: an alert for each."""
        with self.db.transaction() as s:
            host = self._host(s, guid)
            if host is None:
                return
            ctx = self._context(s)
            for vm in s.execute(select(VmInstance).where(
                    VmInstance.instance_name.in_(list(names)), VmInstance.removed.is_(None))).scalars():
                ctx.alerts.raise_alert(alerts.USERVM, f"VM {vm.instance_name} ({vm.name}) is paused on host {host.name}: "
                                                      f"its primary storage does not answer (I/O error); it resumes "
                                                      f"when the storage answers again", zone_id=vm.zone_id,
                                       pod_id=host.pod_id, cluster_id=host.cluster_id, resource_uuid=vm.uuid)

    def image_store_target(self, store_uuid: str) -> tuple[str, list[str]] | tuple[None, None]:
        """(url, guids of the Up KVM hosts of its zone) of an NFS image store; (None, None) otherwise."""
        with self.db.transaction(readonly=True) as s:
            store = s.execute(select(ImageStore).where(ImageStore.uuid == store_uuid)).scalar_one_or_none()
            if store is None or store.removed is not None or not store.url.lower().startswith("nfs://"):
                return None, None
            q = select(Host.guid).where(Host.state == "Up", Host.removed.is_(None), Host.hypervisor == "KVM")
            if store.zone_id is not None:
                q = q.where(Host.zone_id == store.zone_id)
            return store.url, [g for g in s.execute(q).scalars() if g]

    def store_result(self, store_uuid: str, stats: m.PoolStats | None, message: str | None) -> None:
        """A host checked the image store (`stats`: its figures) or could not reach it (`message`)."""
        with self.db.transaction() as s:
            store = s.execute(select(ImageStore).where(ImageStore.uuid == store_uuid)).scalar_one_or_none()
            if store is None:
                return
            storage = self._context(s).storage
            if stats is not None:
                storage.image_store_checked(store, stats.capacity_bytes, stats.used_bytes)
            else:
                storage.image_store_unreachable(store, message)


# A host with only its own columns: no eager loads of its cluster, pod and zone.
_LIGHT_HOST = select(Host).options(lazyload("*")).where(Host.removed.is_(None))


def _check_location(session: Session, host: Host, request: m.RegisterRequest,
                    places: dict[tuple[str, int], Row]) -> None:
    """The zone/pod/cluster in agent.properties, when given, must be the host's (name or id).

    `places` keeps the rows read so far, for the other registrations of the same batch."""
    for model, value, row_id, what in (
        (Zone, request.zone, host.zone_id, "zone"),
        (Pod, request.pod, host.pod_id, "pod"),
        (Cluster, request.cluster, host.cluster_id, "cluster"),
    ):
        if not value:
            continue
        row = places.get((what, row_id))
        if row is None:
            row = places[(what, row_id)] = session.execute(
                select(model.id, model.uuid, model.name).where(model.id == row_id)).one()
        if value not in (row.uuid, row.name) and value != str(row.id):
            raise AgentRefused(
                f"agent.properties names {what} {value!r} but host {host.name} was added to {what} {row.name} ({row.uuid}); fix {what}= in agent.properties"
            )


def _adopt_simulated(session: Session, request: m.RegisterRequest):
    """A simulated agent (e.g. a load generator) joins the Simulator cluster it names.

    Real hypervisors keep the explicit addHost flow; simulated hosts exist for rehearsals
    and scale tests, where adding thousands of hosts one by one would be the bottleneck.
    """
    if not request.cluster:
        return None
    ref = request.cluster
    q = select(Cluster).options(lazyload("*")).where(Cluster.removed.is_(None), Cluster.hypervisor == "Simulator")
    cluster = session.execute(q.where(Cluster.uuid == ref)).scalar_one_or_none()
    if cluster is None:
        named = session.execute(q.where(Cluster.name == ref)).scalars().all()
        if len(named) != 1:
            raise AgentRefused(
                f"simulated agent {request.guid} names cluster {ref!r}, which is not exactly one Simulator cluster; "
                "use the cluster's id")
        cluster = named[0]
    host = Host(name=request.host.hostname or request.guid, guid=request.guid, zone_id=cluster.zone_id,
                pod_id=cluster.pod_id, cluster_id=cluster.id, hypervisor="Simulator",
                url=f"http://sim/{cluster.name}/{request.guid}", ip_address=request.host.private_ip,
                state="Connecting", resource_state="Enabled", details={"agent": EXTERNAL})
    session.add(host)
    session.flush()
    log.info("simulated agent %s joined cluster %s as host %s", request.guid, cluster.name, host.uuid)
    return host
