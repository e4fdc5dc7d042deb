"""Hosts: addHost, updateHost, deleteHost, listHosts, reconnectHost and host maintenance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import time

from ..api.listing import listed
from ..api.params import Boolean, List, Param, String, Uuid, given
from ..api.registry import ListResult, Success, api_command
from ..formatting import date, ratio
from ..persistence.models import Cluster, Host, Pod, VmInstance, Zone
from ..services import cluster, migration
from ..services.capacity import decimal, host_capacity, percent
from ..services.steps import DbStep

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy import Row

    from ..services.capacity import Allocation
    from ..services.steps import Steps
    from types import SimpleNamespace
    from ..context import Context

HOST_FIELDS = (
    ("id", "the ID of the host"), ("name", "the name of the host"),
    ("state", "the state of the host"), ("resourcestate", "the resource state of the host"),
    ("type", "the host type"), ("ipaddress", "the IP address of the host"),
    ("zoneid", "the Zone ID of the host"), ("zonename", "the Zone name of the host"),
    ("podid", "the Pod ID of the host"), ("podname", "the Pod name of the host"),
    ("clusterid", "the cluster ID of the host"), ("clustername", "the cluster name of the host"),
    ("clustertype", "the cluster type of the cluster that host belongs to"),
    ("hypervisor", "the host hypervisor"), ("hypervisorversion", "the hypervisor version"),
    ("version", "the host version"), ("cpusockets", "the number of CPU sockets on the host", "integer"),
    ("cpunumber", "the CPU number of the host", "integer"), ("cpuspeed", "the CPU speed of the host", "long"),
    ("cpuallocated", "the amount of the host's CPU currently allocated"),
    ("cpuwithoverprovisioning", "the amount of the host's CPU after applying the cpu.overprovisioning.factor"),
    ("cpuused", "the amount of the host's CPU currently used"),
    ("memorytotal", "the memory total of the host", "long"),
    ("memorywithoverprovisioning", "the amount of the host's memory after applying the mem.overprovisioning.factor"),
    ("memoryallocated", "the amount of the host's memory currently allocated", "long"),
    ("memoryused", "the amount of the host's memory currently used", "long"),
    ("hosttags", "comma-separated list of tags for the host"),
    ("created", "the date and time the host was created", "date"),
    ("lastpinged", "the date and time the host was last pinged", "date"),
    ("managementserverid", "the ID of the management server holding the host's agent"),
    ("managementservername", "the name of the management server holding the host's agent"),
)


class Placement:
    """What every host of one cluster shares in its view, computed once per page."""

    def __init__(self, cluster: Cluster, ratios: tuple[float, float]):
        # The fields every host of the cluster has alike; each view starts as a copy.
        self.fields = {
            "zoneid": cluster.zone_uuid, "zonename": cluster.zone_name, "podid": cluster.pod_uuid,
            "podname": cluster.pod_name, "clusterid": cluster.uuid, "clustername": cluster.name,
            "clustertype": cluster.cluster_type,
            "islocalstorageactive": False, "hahost": False,
            "hostha": {"haenable": False, "hastate": "Disabled"},
            "outofbandmanagement": {"enabled": False, "powerstate": "Disabled"},
        }
        self.fields = {k: v for k, v in self.fields.items() if v is not None}
        self.arch = cluster.arch
        self.ratios = ratios


def render_hosts(ctx: Context, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """API views of host `rows` (of the host service's VIEW_COLUMNS), with their clusters,
    pods, zones, ratios and allocations read once for the whole list, never once per host."""
    clusters, allocations = ctx.hosts.view_context(rows)
    placements = {cid: Placement(cluster, ratios) for cid, (cluster, ratios) in clusters.items()}
    seen = Seen()
    seen.servers = cluster.server_names(ctx.session, {row.mgmt_server_id for row in rows} - {None})
    views = [host_view(row, placements, allocations, seen) for row in rows]
    ha_tag = ctx.settings.get("ha.tag")
    if ha_tag:
        for view in views:
            if ha_tag in (view.get("hosttags") or "").split(","):
                view["hahost"] = True
    return views


class Seen:
    """What the views of one list have already printed: the hosts of a page mostly share
    their sizes, ratios and allocations, and many were pinged in the same second."""

    __slots__ = ("sizes", "pings", "servers")

    def __init__(self):
        self.sizes: dict[tuple[object, ...], dict[str, Any]] = {}
        self.pings: dict[int, str] = {}
        # {msid: (uuid, name)} of the management servers holding the hosts' agents
        self.servers: dict[int, tuple[str, str]] = {}


def _epoch_date(seconds: float) -> str:
    """`last_pinged` (epoch seconds) in CloudStack's date form."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(seconds))


def size_fields(cpus: int, cpu_speed: int, cpu_sockets: int, memory_bytes: int, cpu_used_percent: float | None, memory_used_bytes: int,
                ratios: tuple[float, float], allocation: Allocation | None) -> dict[str, Any]:
    """The CPU and memory fields of a host's view, from its capacity (services.capacity)."""
    capacity = host_capacity(cpus, cpu_speed, memory_bytes, ratios, allocation)
    used = capacity.used
    fields = {}
    if cpus is not None and cpu_speed is not None:
        allocated = percent(used.cpu_mhz, capacity.cpu_mhz) + "%"
        if cpu_sockets is not None:
            fields["cpusockets"] = cpu_sockets
        fields["cpunumber"] = cpus
        fields["cpuspeed"] = cpu_speed
        fields["cpuallocated"] = allocated
        fields["cpuallocatedpercentage"] = allocated
        fields["cpuallocatedvalue"] = used.cpu_mhz
        fields["cpuallocatedwithoverprovisioning"] = percent(used.cpu_mhz, capacity.cpu_total) + "%"
        fields["cpuwithoverprovisioning"] = ratio(capacity.cpu_total)
        fields["cpuused"] = decimal(cpu_used_percent or 0) + "%"
    if memory_bytes is not None:
        fields["memorytotal"] = memory_bytes
        fields["memorywithoverprovisioning"] = decimal(capacity.memory_total)
        fields["memoryallocated"] = used.memory_bytes
        fields["memoryallocatedbytes"] = used.memory_bytes
        fields["memoryallocatedpercentage"] = percent(used.memory_bytes, memory_bytes) + "%"
        fields["memoryused"] = memory_used_bytes or 0
    return fields


def host_view(row: Row, placements: Mapping[int, Placement], allocations: Mapping[int, Allocation],
              seen: Seen | None = None) -> dict[str, Any]:
    """One host's API view; fields that are None are left out, as CloudStack omits nulls.

    `placements` and `allocations` are by cluster and host id (render_hosts). Built field by
    field rather than filtered afterwards: listHosts builds 500 of these per page; `seen`
    (a Seen) lets them print each set of CPU and memory figures and each ping time once."""
    seen = seen or Seen()
    (host_id, uuid, name, state, resource_state, host_type, ip_address, cluster_id, hypervisor,
     hypervisor_version, version, host_tags, capabilities, status_message, arch, annotation, created,
     last_pinged, disconnected, cpu_sockets, cpus, cpu_speed, memory_bytes, cpu_used_percent,
     memory_used_bytes, msid) = row
    placement = placements[cluster_id]
    view = placement.fields.copy()
    view["id"] = uuid
    view["name"] = name
    view["state"] = state
    view["resourcestate"] = resource_state
    view["type"] = host_type
    view["hypervisor"] = hypervisor
    if ip_address is not None:
        view["ipaddress"] = ip_address
    if hypervisor_version is not None:
        view["hypervisorversion"] = hypervisor_version
    if version is not None:
        view["version"] = version
    arch = arch or placement.arch
    if arch is not None:
        view["arch"] = arch
    if host_tags is not None:
        view["hosttags"] = host_tags
    if capabilities is not None:
        view["capabilities"] = capabilities
    if status_message is not None:
        view["statusmessage"] = status_message
    if annotation is not None:
        view["annotation"] = annotation
    if created is not None:
        view["created"] = date(created)
    if last_pinged is not None:
        pinged = seen.pings.get(last_pinged)
        if pinged is None:
            pinged = seen.pings[last_pinged] = _epoch_date(last_pinged)
        view["lastpinged"] = pinged
    if disconnected is not None:
        view["disconnected"] = date(disconnected)
    server = seen.servers.get(msid) if msid is not None else None
    if server is not None:
        view["managementserverid"], view["managementservername"] = server
    allocation = allocations.get(host_id)
    key = (cpus, cpu_speed, cpu_sockets, memory_bytes, cpu_used_percent, memory_used_bytes, placement.ratios,
           (allocation.cpu_mhz, allocation.memory_bytes) if allocation is not None else None)
    fields = seen.sizes.get(key)
    if fields is None:
        fields = seen.sizes[key] = size_fields(cpus, cpu_speed, cpu_sockets, memory_bytes, cpu_used_percent,
                                               memory_used_bytes, placement.ratios, allocation)
    view.update(fields)
    return view


def _one_host(ctx: Context, host: Host):
    """A single host (just changed in this transaction) as a command or job result."""
    return render_hosts(ctx, ctx.hosts.view_rows([host.id]))[0]


@api_command("addHost", response="host", returns_list=True, fields=HOST_FIELDS, params=[
    Param("zoneid", Uuid(Zone), required=True, description="the Zone ID for the host"),
    Param("podid", Uuid(Pod), required=True, description="the Pod ID for the host"),
    Param("url", String(2048), required=True, description="the host URL"),
    Param("hypervisor", String(), required=True, description="hypervisor type of the host"),
    Param("clusterid", Uuid(Cluster), description="the cluster ID for the host"),
    Param("clustername", String(), description="the cluster name for the host"),
    Param("username", String(), description="the username for the host; not used by KVM or Simulator hosts"),
    Param("password", String(), description="the password for the host; not used by KVM or Simulator hosts"),
    Param("hosttags", List(), description="list of tags to be added to the host"),
    Param("allocationstate", String(), description="Allocation state of this Host for allocation of new resources"),
])
def add_host(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Adds a new host."""
    host = ctx.hosts.add_host(
        zone=p.zoneid, pod=p.podid, url=p.url, hypervisor=p.hypervisor, cluster=p.clusterid,
        cluster_name=p.clustername, host_tags=p.hosttags, allocation=p.allocationstate,
    )
    return ListResult([_one_host(ctx, host)], 1)


@api_command("updateHost", response="host", fields=HOST_FIELDS, params=[
    Param("id", Uuid(Host), required=True, description="the ID of the host to update"),
    Param("allocationstate", String(), description="Change resource state of host, valid values are [Enable, Disable]"),
    Param("hosttags", List(), description="list of tags to be added to the host; replaces the current tags"),
    Param("name", String(), description="the new name of the host"),
    Param("annotation", String(), description="add an annotation to the host"),
    Param("oscategoryid", String(), description="the ID of the OS category; not used by this engine"),
    Param("url", String(2048), description="the new URL of the host; not used by this engine"),
])
def update_host(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a host."""
    host = ctx.hosts.update_host(
        p.id, allocation=p.allocationstate, host_tags=p.hosttags, tags_given=given(p, "hosttags"),
        name=p.name, annotation=p.annotation,
    )
    return _one_host(ctx, host)


@api_command("deleteHost", params=[
    Param("id", Uuid(Host), required=True, description="the host ID"),
    Param("forced", Boolean(), description="Force delete the host; it need not be in maintenance"),
    Param("forcedestroylocalstorage", Boolean(), description="Force destroy local storage on this host"),
])
def delete_host(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a host."""
    ctx.hosts.delete_host(p.id, forced=bool(p.forced))
    return Success()


@api_command("reconnectHost", response="host", async_job=True, instance_type="Host", fields=HOST_FIELDS,
             params=[Param("id", Uuid(Host), required=True, description="the host ID")])
def reconnect_host(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Reconnects a host."""
    return _one_host(ctx, ctx.hosts.reconnect(p.id))


@api_command("prepareHostForMaintenance", response="host", async_job=True, instance_type="Host",
             fields=HOST_FIELDS, params=[Param("id", Uuid(Host), required=True, description="the host ID")])
def prepare_host_for_maintenance(ctx: Context, p: SimpleNamespace) -> Steps:
    """Prepares a host for maintenance: its running guests are live-migrated to other hosts of its cluster."""
    host_id = p.id.id
    yield from migration.prepare_maintenance(host_id)
    return (yield DbStep(_host_result, host_id))


def _host_result(ctx: Context, host_id: int):
    return render_hosts(ctx, ctx.hosts.view_rows([host_id]))[0]


@api_command("cancelHostMaintenance", response="host", async_job=True, instance_type="Host",
             fields=HOST_FIELDS, params=[Param("id", Uuid(Host), required=True, description="the host ID")])
def cancel_host_maintenance(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Cancels host maintenance."""
    return _one_host(ctx, ctx.hosts.cancel_maintenance(p.id))


@api_command("listHosts", response="host", cacheable=True, fields=HOST_FIELDS, params=[
    Param("id", Uuid(Host), description="the id of the host"),
    Param("name", String(), description="the name of the host"),
    Param("type", String(), description="the host type"),
    Param("state", String(), description="the state of the host"),
    Param("resourcestate", String(), description="list hosts by resource state"),
    Param("zoneid", Uuid(Zone), description="the Zone ID for the host"),
    Param("podid", Uuid(Pod), description="the Pod ID for the host"),
    Param("clusterid", Uuid(Cluster), description="lists hosts existing in particular cluster"),
    Param("hypervisor", String(), description="hypervisor type of host: KVM, Simulator"),
    Param("hahost", Boolean(), description="if true, list only hosts dedicated to HA"),
    Param("details", List(), description="give details by category: all, capacity, events, stats, min"),
    Param("outofbandmanagementenabled", Boolean(), description="list hosts for which out-of-band management is enabled"),
])
def list_hosts(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists hosts."""
    return listed(ctx.hosts.list_page(p), render_many=lambda rows: render_hosts(ctx, rows))


@api_command("findHostsForMigration", response="host", fields=HOST_FIELDS + (
    ("suitableformigration", "true if this host is suitable (has enough capacity and satisfies all conditions "
                             "like hosttags, max guests vm limit etc) to migrate a VM to it , false otherwise",
     "boolean"),
    ("requiresStorageMotion", "true if migrating a vm to this host requires storage motion, false otherwise",
     "boolean"),
    ("notsuitablereason", "why the host is not suitable for the migration"),
), params=[
    Param("virtualmachineid", Uuid(VmInstance), required=True,
          description="find hosts to which this VM can be migrated and flag the hosts with enough CPU/RAM to host it"),
])
def find_hosts_for_migration(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Find hosts suitable for migrating a virtual machine."""
    found = migration.candidates(ctx, p.virtualmachineid)
    views = {row["id"]: row for row in render_hosts(ctx, ctx.hosts.view_rows([h.id for h, _why in found]))}
    hosts = []
    for host, why in found:
        view = dict(views[host.uuid], suitableformigration=why is None, requiresStorageMotion=False)
        if why is not None:
            view["notsuitablereason"] = why
        hosts.append(view)
    # Suitable hosts first, as CloudStack lists them.
    hosts.sort(key=lambda v: not v["suitableformigration"])
    return ListResult(hosts, len(hosts))
