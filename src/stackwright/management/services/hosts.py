"""Hypervisor hosts: registration, the host state machine, resource states and maintenance.

A host has two states (cloudstack-api.md §8): `state`, the link to its agent (Connecting,
Up, Alert, Disconnected, Down, Removed...), and `resource_state`, what the administrator
allows (Enabled, Disabled, and the maintenance states). Maintenance changes only the
resource state; a host in Maintenance stays Up.

How a host gets its agent depends on the hypervisor and sits behind `HostConnector`:
Simulator hosts are answered by the engine itself (stackwright.simulation.host) and come Up at
once; KVM hosts wait in Connecting until their agent registers over the agent channel,
which then calls `HostService.agent_connected`.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Never

from sqlalchemy import bindparam, false, func, literal, or_, select

from stackwright.simulation import host as simulator

from ..errors import ApiError, CloudRuntimeError, InvalidParameterValue
from ..persistence.models import Cluster, Host, Pod, VmInstance, Zone, utcnow
from .hierarchy import allocation_state, hypervisor_type
from .queries import NOCASE, ROW, Filter, filtered, keyword, page
from .vms import DESTROYED, EXPUNGING, RUNNING, STOPPED

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence
    from datetime import datetime

    from sqlalchemy import Row

    from stackwright.protocol import messages as m

    from .capacity import Allocation

    from types import SimpleNamespace
    from ..services.queries import Page
    from ..context import Context

log = logging.getLogger(__name__)

# resource states (§8)
ENABLED, DISABLED = "Enabled", "Disabled"
PREPARE, MAINTENANCE = "PrepareForMaintenance", "Maintenance"
ERROR_IN_PREPARE, ERROR_IN_MAINTENANCE = "ErrorInPrepareForMaintenance", "ErrorInMaintenance"
MAINTENANCE_STATES = (PREPARE, MAINTENANCE, ERROR_IN_PREPARE, ERROR_IN_MAINTENANCE)

# updateHost allocationstate event -> resource states it may be applied in
ALLOCATION_EVENTS = {
    "Enable": ((ENABLED, DISABLED), ENABLED),
    "Disable": ((ENABLED, DISABLED, ERROR_IN_PREPARE, ERROR_IN_MAINTENANCE), DISABLED),
}


def tag_string(tags: Iterable[str] | None) -> str | None:
    """Host tags as CloudStack shows them: comma-joined, first occurrence order, no blanks."""
    seen = []
    for tag in tags or ():
        tag = tag.strip()
        if tag and tag not in seen:
            seen.append(tag)
    return ",".join(seen) or None


# --- how hosts get their agents ------------------------------------------------------


class HostConnector:
    """The engine's way to reach the agent of one hypervisor kind.

    `address(url)` validates the URL at addHost and returns the address it names (None when
    the engine chooses one). `connect(service, host)` returns `(HostInfo, guid, agent version)`
    when the agent answers right away, or None when the agent registers later by itself; in
    that case `waiting_message(service, host)` tells the administrator what the host waits for.
    """

    def address(self, url: str) -> str | None:
        raise NotImplementedError

    def connect(self, service: HostService, host: Host) -> tuple[m.HostInfo, str, str] | None:
        raise NotImplementedError

    def waiting_message(self, service: HostService, host: Host) -> None:
        return None


class SimulatorConnector(HostConnector):
    """Simulator hosts: the engine plays the agent, so they are Up as soon as they are added."""

    def address(self, url: str) -> None:
        return None

    def agent(self, service: HostService, url: str) -> simulator.SimulatedHost:
        try:
            return simulator.SimulatedHost(url, service.ctx.settings.get)
        except simulator.SimulatorUrlError as e:
            raise InvalidParameterValue(str(e)) from None

    def connect(self, service: HostService, host: Host) -> tuple[m.HostInfo, str, str]:
        agent = self.agent(service, host.url)
        ip = host.ip_address or simulator.address(host.id, service.address_taken)
        # A reconnect keeps the name the host registered with.
        name = host.name if host.guid else None
        # A guid the engine makes up itself is unique; no need to look for another owner.
        host.guid = host.guid or agent.new_guid()
        return agent.host_info(ip, hostname=name), host.guid, agent.version


class AgentConnector(HostConnector):
    """KVM hosts: a stackwright-agent on the host connects to the engine's agent channel."""

    def address(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise InvalidParameterValue(
                f"{url} is not a valid KVM host URL; use http://<address of the host>"
            )
        return parts.hostname

    def connect(self, service: HostService, host: Host) -> tuple[m.HostInfo, str, str] | None:
        """An agent that registered before this addHost completes the host at once."""
        agents = service.ctx.agents
        found = agents.adopt_pending(host.ip_address)
        if found is None:
            return None
        service.ctx.after_commit(lambda: agents.adopted(found[1]))
        return found

    def waiting_message(self, service: HostService, host: Host) -> str:
        options = getattr(service.ctx.engine, "options", None)
        port = getattr(options, "agent_port", None) or service.ctx.settings.get("port")
        return (
            f"waiting for the agent on {host.ip_address} to connect to the management server on port {port}; check that "
            "stackwright-agent runs there and that agent.properties names this zone/pod/cluster"
        )


CONNECTORS = {"Simulator": SimulatorConnector(), "KVM": AgentConnector()}


# --- the service -----------------------------------------------------------------------


class HostService:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.session = ctx.session

    # lookups

    def address_taken(self, ip: str) -> bool:
        return self.session.execute(
            select(Host.id).where(Host.ip_address == ip, Host.removed.is_(None)).limit(1)
        ).first() is not None

    def by_guid(self, guid: str) -> Host | None:
        return self.session.execute(
            select(Host).where(Host.guid == guid, Host.removed.is_(None))
        ).scalars().first()

    def by_address(self, ip: str, zone_id: int | None = None) -> Host | None:
        q = select(Host).where(Host.ip_address == ip, Host.removed.is_(None))
        if zone_id is not None:
            q = q.where(Host.zone_id == zone_id)
        return self.session.execute(q.order_by(Host.id)).scalars().first()

    def presence(self, host_id: int) -> Row[tuple[str, datetime | None]]:
        """(state, removed) of a host as committed now."""
        return self.session.execute(select(Host.state, Host.removed).where(Host.id == host_id)).one()

    def _live(self, host: Host):
        if host.removed is not None:
            raise InvalidParameterValue(f"Unable to find host by id {host.uuid}; it was removed")
        return host

    # addHost

    def add_host(self, *, zone: Zone, pod: Pod, url: str, hypervisor: str, cluster: Cluster | None = None,
                 cluster_name: str | None = None, host_tags: str | None = None,
                 allocation: str | None = None) -> Host:
        """Register a host; returns it (Up for Simulator hosts, Connecting for KVM hosts)."""
        kind = hypervisor_type(hypervisor)
        if pod.zone_id != zone.id:
            raise InvalidParameterValue(
                f"Pod with specified id {pod.uuid} doesn't belong to the zone with specified id {zone.uuid}"
            )
        if zone.removed is not None or pod.removed is not None:
            raise InvalidParameterValue("Cannot add a host to a removed zone or pod")
        cluster = self._cluster_for(zone, pod, kind, cluster, cluster_name)
        resource_state = allocation_state(allocation) if allocation else ENABLED
        connector = CONNECTORS[kind]
        ip = connector.address(url)
        if ip is not None:
            existing = self.by_address(ip, zone.id)
            if existing is not None:
                raise InvalidParameterValue(
                    f"A host with address {ip} already exists in zone {zone.name}: {existing.name} (id {existing.uuid}); delete it before adding it again"
                )
        host = Host(
            name=ip or "", url=url, hypervisor=kind, type="Routing", state="Connecting",
            resource_state=resource_state, zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
            ip_address=ip, host_tags=tag_string(host_tags), details={},
        )
        host.cluster = cluster
        self.session.add(host)
        self.session.flush()
        self._connect(connector, host)
        self._simulated_agent(host, start=True)
        self.ctx.event("HOST.ADD", f"Added host {host.name} ({kind}) to cluster {cluster.name}", host.uuid)
        return host

    def _cluster_for(self, zone: Zone, pod: Pod, kind: str, cluster: Cluster | None, cluster_name: str | None):
        if cluster is None and cluster_name:
            # Like CloudStack, a cluster named but not found is created on the way.
            cluster = self.ctx.hierarchy.cluster_by_name(pod, cluster_name) or self.ctx.hierarchy.add_cluster(
                zone=zone, pod=pod, name=cluster_name, hypervisor=kind, kind="CloudManaged")
        if cluster is None:
            raise InvalidParameterValue(
                "Cluster id or cluster name is required to add a host; pass clusterid of an existing "
                "cluster (addCluster) or clustername"
            )
        if cluster.removed is not None:
            raise InvalidParameterValue(f"Unable to find cluster by id {cluster.uuid}; it was removed")
        if cluster.pod_id != pod.id:
            raise InvalidParameterValue(
                f"Cluster with specified id {cluster.uuid} doesn't belong to the pod with specified id {pod.uuid}"
            )
        if cluster.hypervisor.lower() != kind.lower():
            raise InvalidParameterValue(
                f"Can't add host whose hypervisor type is: {kind} into cluster: {cluster.name} whose hypervisor type is: {cluster.hypervisor}"
            )
        return cluster

    def _connect(self, connector: HostConnector, host: Host):
        answer = connector.connect(self, host)
        if answer is None:
            host.state = "Connecting"
            host.status_message = connector.waiting_message(self, host)
            log.info("host %s (%s) waits for its agent", host.name, host.uuid)
            return
        info, guid, version = answer
        self.agent_connected(host, info, guid=guid, agent_version=version)

    def _simulated_agent(self, host: Host, start: bool):
        """Start (or stop) the in-engine agent of a Simulator host once the change is committed,
        when the agent channel runs; without it the host service answers for the host alone."""
        if host.hypervisor != simulator.HYPERVISOR or not host.guid:
            return
        agents, guid, url = self.ctx.agents, host.guid, host.url
        if start:
            # This server runs it: no peer takes it for one left by a server found Down.
            host.mgmt_server_id = self.ctx.engine.cluster.me.msid
            self.ctx.after_commit(lambda: agents.start_simulated(guid, url))
        else:
            self.ctx.after_commit(lambda: agents.stop_simulated(guid))

    # the agent side

    def agent_connected(self, host: Host, info: m.HostInfo, guid: str | None = None, agent_version: str | None = None) -> Host:
        """The agent of `host` registered with `info` (a protocol HostInfo): record it and mark the host Up."""
        if guid and guid != host.guid:
            other = self.by_guid(guid)
            if other is not None and other.id != host.id:
                raise InvalidParameterValue(
                    f"A host with guid {guid} already exists: {other.name} (id {other.uuid})"
                )
            host.guid = guid
        if not (host.hypervisor == simulator.HYPERVISOR and host.ip_address):
            # A Simulator host keeps the name and address the engine chose for it.
            host.name = info.hostname or host.name
            host.ip_address = info.private_ip or host.ip_address
            host.private_mac = info.private_mac
        host.hypervisor_version = info.hypervisor_version
        host.version = agent_version or host.version
        host.cpu_sockets = info.cpu_sockets
        host.cpus = info.cpus
        host.cpu_speed = info.cpu_mhz
        host.memory_bytes = info.memory_bytes
        host.capabilities = "hvm" if info.accel == "kvm" or host.hypervisor == "Simulator" else None
        host.details = dict(host.details or {}, arch=info.arch, accel=info.accel,
                            bridges=",".join(info.bridges), cpucores=info.cpu_cores,
                            cputhreads=info.cpu_threads)
        host.state = "Up"
        host.status_message = None
        host.disconnected = None
        host.last_pinged = int(time.time())
        self.session.flush()
        log.info("host %s (%s) is Up: %d x %d MHz, %d bytes", host.name, host.uuid,
                 host.cpus, host.cpu_speed, host.memory_bytes)
        return host

    def agent_pinged(self, host: Host, stats: m.HostStats | None = None) -> None:
        """A heartbeat: the host is Up again if it was Alert or Disconnected."""
        host.last_pinged = int(time.time())
        if stats is not None:
            host.cpu_used_percent = stats.cpu_utilization
            host.memory_used_bytes = stats.memory_total_bytes - stats.memory_free_bytes
        if host.state in ("Alert", "Disconnected", "Connecting"):
            host.state = "Up"
            host.disconnected = None

    def agent_lost(self, host: Host, state: str = "Disconnected") -> None:
        """The agent's session ended or stopped pinging (`state` Disconnected, Alert or Down)."""
        if state == "Alert" and host.state == "Down":
            # The silent connection of a host found Down is dropped after the fact; that
            # does not make the host any less Down. Only a registration or a ping does.
            return
        if host.removed is None and host.state != state:
            host.state = state
            if host.disconnected is None:
                host.disconnected = utcnow()
            if state == "Down":
                self.ctx.ha.host_down(host)

    # updateHost

    def update_host(self, host: Host, *, allocation: str | None = None, host_tags: str | None = None, tags_given: bool = False, name: str | None = None,
                    annotation: str | None = None) -> Host:
        """Every failure is CloudStack's 530 `Failed to update host: <host> with id <id>, <reason>`."""
        try:
            self._live(host)
            event = None
            if allocation is not None:
                event = next((e for e in ALLOCATION_EVENTS if e.lower() == allocation.lower()), None)
                if event is None:
                    raise InvalidParameterValue(
                        f"Invalid allocation state: {allocation}, only Enable/Disable are allowed"
                    )
                allowed, target = ALLOCATION_EVENTS[event]
                if host.resource_state not in allowed:
                    raise InvalidParameterValue(
                        f"No next resource state found for current state = {host.resource_state} event = {event}; cancel the "
                        "maintenance first (cancelHostMaintenance)"
                    )
            if name is not None and not name.strip():
                raise InvalidParameterValue("the host name cannot be blank")
        except ApiError as e:
            raise CloudRuntimeError(
                f"Failed to update host: {host.name} with id {host.uuid}, {e.text}"
            ) from None
        if event is not None:
            host.resource_state = ALLOCATION_EVENTS[event][1]
        if tags_given:
            host.host_tags = tag_string(host_tags)
        if name is not None:
            host.name = name.strip()
        if annotation is not None:
            host.details = dict(host.details or {}, annotation=annotation)
        self.session.flush()
        self.ctx.event("HOST.UPDATE", f"Updated host {host.name}", host.uuid)
        return host

    # deleteHost

    def delete_host(self, host: Host, forced: bool = False) -> None:
        self._live(host)
        if host.resource_state != MAINTENANCE and not forced:
            raise CloudRuntimeError(
                f"Host {host.uuid} cannot be deleted as it is not in maintenance mode. Either put the host into "
                "maintenance or perform a forced deletion."
            )
        guests = self._guests_on(host)
        if guests:
            raise CloudRuntimeError(
                f"Host {host.uuid} cannot be deleted: VMs still run on it "
                f"({', '.join(name for name, _state in guests)}); migrate or stop them first"
            )
        host.removed = utcnow()
        host.state = "Removed"
        self._simulated_agent(host, start=False)
        self.ctx.event("HOST.DELETE", f"Deleted host {host.name}", host.uuid)

    # reconnectHost

    def reconnect(self, host: Host) -> Host:
        self._live(host)
        if host.resource_state in MAINTENANCE_STATES:
            raise CloudRuntimeError(
                f"Failed to reconnect host {host.name}: it is in resource state {host.resource_state}; cancel the maintenance first"
            )
        self._connect(CONNECTORS[host.hypervisor], host)
        self.ctx.event("HOST.RECONNECT", f"Reconnected host {host.name}", host.uuid)
        return host

    # maintenance

    def begin_maintenance(self, host: Host) -> Sequence[VmInstance]:
        """PrepareForMaintenance: no new guests come; returns the running guests to migrate away
        (services/migration.py ends it in Maintenance or ErrorInPrepareForMaintenance)."""
        self._live(host)
        state = host.resource_state
        if state in (PREPARE, MAINTENANCE, ERROR_IN_PREPARE):
            self._maintenance_failure(
                f"Host is already in state {state}. Cannot recall for maintenance until resolved."
            )
        if state not in (ENABLED, ERROR_IN_MAINTENANCE, "Degraded"):
            self._maintenance_failure(
                f"No next resource state found for current state = {state} event = AdminAskMaintenance; "
                "enable the host first (updateHost allocationstate=Enable)"
            )
        preparing = self.session.execute(
            select(Host.name).where(Host.cluster_id == host.cluster_id, Host.id != host.id,
                                    Host.resource_state == PREPARE, Host.removed.is_(None))
        ).scalars().all()
        if preparing:
            self._maintenance_failure(
                "There are other servers attempting migrations for maintenance. Found hosts in "
                f"PrepareForMaintenance status in cluster {host.cluster.name}: {', '.join(preparing)}"
            )
        guests = self._guests_on(host)
        unsettled = [name for name, state in guests if state != RUNNING]
        if unsettled:
            self._maintenance_failure(
                f"There are VMs in transition or error state on host {host.name}: {', '.join(unsettled)}; "
                "wait for them to settle or repair them first"
            )
        host.resource_state = PREPARE
        self.session.flush()
        self.ctx.event("MAINT.PREPARE", f"Host {host.name} is in {PREPARE}: {len(guests)} running VM(s) to migrate", host.uuid)
        return self.session.execute(
            select(VmInstance).where(VmInstance.host_id == host.id, VmInstance.removed.is_(None),
                                     VmInstance.state == RUNNING).order_by(VmInstance.id)
        ).scalars().all()

    def _guests_on(self, host: Host):
        """(name, state) of the guests that occupy `host`: anything not Stopped or gone."""
        return self.session.execute(
            select(VmInstance.name, VmInstance.state).where(
                VmInstance.host_id == host.id, VmInstance.removed.is_(None),
                VmInstance.state.not_in((STOPPED, DESTROYED, EXPUNGING)))
            .order_by(VmInstance.id)
        ).all()

    @staticmethod
    def _maintenance_failure(reason: str) -> Never:
        raise CloudRuntimeError(f"Failed to prepare host for maintenance due to: {reason}")

    def cancel_maintenance(self, host: Host) -> Host:
        self._live(host)
        if host.resource_state not in MAINTENANCE_STATES:
            raise CloudRuntimeError(
                f"Failed to cancel maintenance for host {host.name}: its resource state is {host.resource_state}, which is not a "
                "maintenance state"
            )
        host.resource_state = ENABLED
        if host.hypervisor == "Simulator":
            self._connect(CONNECTORS["Simulator"], host)
        self.session.flush()
        self.ctx.event("MAINT.CANCEL", f"Cancelled maintenance of host {host.name}", host.uuid)
        return host

    # counting, for guards elsewhere

    def count_in(self, *, zone: Zone | None = None, pod: Pod | None = None, cluster: Cluster | None = None) -> int:
        q = select(func.count(Host.id)).where(Host.removed.is_(None))
        if zone is not None:
            q = q.where(Host.zone_id == zone.id)
        if pod is not None:
            q = q.where(Host.pod_id == pod.id)
        if cluster is not None:
            q = q.where(Host.cluster_id == cluster.id)
        return self.session.execute(q).scalar_one()

    # --- reads: listHosts and the views of hosts -----------------------------------------

    def list_page(self, p: SimpleNamespace) -> Page:
        """The page of hosts listHosts `p` asks for, as plain rows of VIEW_COLUMNS in id order."""
        q = filtered(_LIVE_HOST_VIEWS, HOST_FILTERS, p)
        if p.hahost is not None:
            ha_tag = self.ctx.settings.get("ha.tag")
            escaped = (ha_tag or "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            tagged = ((literal(",") + Host.host_tags + literal(",")).like(f"%,{escaped},%", escape="\\")
                      if ha_tag else false())
            q = q.where(tagged if p.hahost else or_(~tagged, Host.host_tags.is_(None)))
        if p.outofbandmanagementenabled:
            q = q.where(false())   # no host has out-of-band management
        return page(self.ctx, p, q, Host.id, whole_rows=True)

    def view_rows(self, ids: Collection[int]) -> Sequence[Row]:
        """The VIEW_COLUMNS of hosts `ids`, in id order."""
        if not ids:
            return []
        self.session.flush()
        return self.session.connection().execute(
            _HOST_VIEWS.where(Host.id.in_(ids)).order_by(Host.id)).all()

    def view_context(self, rows: Sequence[Row]) -> tuple[dict[int, tuple[Row, tuple[float, float]]], dict[int, Allocation]]:
        """What the views of host `rows` (of VIEW_COLUMNS, in id order) refer to, read once for
        all of them: ({cluster id: (cluster row of CLUSTER_VIEW_COLUMNS, over-provisioning
        ratios)}, {host id: Allocation})."""
        if not rows:
            return {}, {}
        capacity = self.ctx.capacity
        cluster_ids = {row.cluster_id for row in rows}
        ratios = capacity.cluster_ratios(cluster_ids)
        clusters = {
            c.id: (c, ratios[c.id]) for c in self.session.connection().execute(
                _CLUSTER_VIEWS_OF, {"ids": list(cluster_ids)})
        }
        # A page of hosts in id order is asked for by its bounds: two parameters, not one per host.
        allocations = capacity.host_allocations_between(rows[0].id, rows[-1].id)
        return clusters, allocations


# What the views of a cluster's hosts share.
CLUSTER_VIEW_COLUMNS = (
    Cluster.id, Cluster.uuid, Cluster.name, Cluster.cluster_type, Cluster.arch, Pod.uuid.label("pod_uuid"),
    Pod.name.label("pod_name"), Zone.uuid.label("zone_uuid"), Zone.name.label("zone_name"),
)

# The host columns a view needs, read as plain rows rather than ORM objects; of `details` only
# the two keys a view shows, extracted by the database.
VIEW_COLUMNS = (
    Host.id, Host.uuid, Host.name, Host.state, Host.resource_state, Host.type, Host.ip_address,
    Host.cluster_id, Host.hypervisor, Host.hypervisor_version, Host.version, Host.host_tags,
    Host.capabilities, Host.status_message, Host.details["arch"].as_string(),
    Host.details["annotation"].as_string(), Host.created, Host.last_pinged, Host.disconnected,
    Host.cpu_sockets, Host.cpus, Host.cpu_speed, Host.memory_bytes, Host.cpu_used_percent,
    Host.memory_used_bytes, Host.mgmt_server_id,
)
# Statements are immutable: built once here, each list only adds its conditions.
_HOST_VIEWS = select(*VIEW_COLUMNS)
_LIVE_HOST_VIEWS = _HOST_VIEWS.where(Host.removed.is_(None))
_CLUSTER_VIEWS = (select(*CLUSTER_VIEW_COLUMNS).join(Pod, Pod.id == Cluster.pod_id)
                  .join(Zone, Zone.id == Cluster.zone_id))
_CLUSTER_VIEWS_OF = _CLUSTER_VIEWS.where(Cluster.id.in_(bindparam("ids", expanding=True)))

HOST_FILTERS = (
    Filter("id", Host.id, ROW),
    Filter("zoneid", Host.zone_id, ROW),
    Filter("podid", Host.pod_id, ROW),
    Filter("clusterid", Host.cluster_id, ROW),
    Filter("name", Host.name, NOCASE),
    Filter("type", Host.type, NOCASE),
    Filter("state", Host.state, NOCASE),
    Filter("resourcestate", Host.resource_state, NOCASE),
    Filter("hypervisor", Host.hypervisor, NOCASE),
    keyword(Host.name, Host.ip_address),
)
