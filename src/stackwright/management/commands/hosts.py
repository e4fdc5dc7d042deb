"""Hosts: addHost, updateHost, deleteHost, listHosts, reconnectHost and host maintenance."""

import time

from sqlalchemy import false, select

from ..api.listing import ci_equals, keyword_filter, page_of
from ..api.params import Boolean, List, Param, String, Uuid, given
from ..api.registry import ListResult, Success, api_command
from ..formatting import date, ratio
from ..persistence.models import Cluster, Host, Pod, VmInstance, Zone
from ..services import migration
from ..services.capacity import Allocation, decimal
from ..services.steps import DbStep

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
)


# The host columns a view needs; listHosts reads these as plain rows, not ORM objects.
VIEW_COLUMNS = (
    Host.id, Host.uuid, Host.name, Host.state, Host.resource_state, Host.type, Host.ip_address,
    Host.cluster_id, Host.hypervisor, Host.hypervisor_version, Host.version, Host.host_tags,
    Host.capabilities, Host.status_message, Host.details, Host.created, Host.last_pinged,
    Host.disconnected, Host.cpu_sockets, Host.cpus, Host.cpu_speed, Host.memory_bytes,
    Host.cpu_used_percent, Host.memory_used_bytes,
)


class Placement:
    """What every host of one cluster shares in its view, computed once per page."""

    def __init__(self, cluster, cpu_ratio, memory_ratio):
        pod, zone = cluster.pod, cluster.zone
        # The fields every host of the cluster has alike; each view starts as a copy.
        self.fields = {
            "zoneid": zone.uuid, "zonename": zone.name, "podid": pod.uuid, "podname": pod.name,
            "clusterid": cluster.uuid, "clustername": cluster.name, "clustertype": cluster.cluster_type,
            "islocalstorageactive": False, "hahost": False,
            "hostha": {"haenable": False, "hastate": "Disabled"},
            "outofbandmanagement": {"enabled": False, "powerstate": "Disabled"},
        }
        self.fields = {k: v for k, v in self.fields.items() if v is not None}
        self.arch = cluster.arch
        self.cpu_ratio = cpu_ratio
        self.memory_ratio = memory_ratio


def render_hosts(ctx, rows):
    """API views of host `rows` (of VIEW_COLUMNS), loading their clusters, pods, zones, ratios
    and allocations once for the whole list, never once per host."""
    if not rows:
        return []
    cluster_ids = {row.cluster_id for row in rows}
    config = ctx.configuration
    placements = {
        c.id: Placement(c, config.cluster_ratio(c, "cpu.overprovisioning.factor"),
                        config.cluster_ratio(c, "mem.overprovisioning.factor"))
        for c in ctx.session.execute(select(Cluster).where(Cluster.id.in_(cluster_ids))).unique().scalars()
    }
    allocations = ctx.capacity.host_allocations_between(min(row.id for row in rows), max(row.id for row in rows))
    return [host_view(row, placements[row.cluster_id], allocations.get(row.id)) for row in rows]


def view_rows(ctx, ids):
    """The VIEW_COLUMNS of hosts `ids`, in id order."""
    if not ids:
        return []
    return ctx.session.execute(select(*VIEW_COLUMNS).where(Host.id.in_(ids)).order_by(Host.id)).all()


def _percent_string(part, whole):
    if not part or not whole:
        return "0%"
    return decimal(part * 100.0 / whole) + "%"


def _epoch_date(seconds):
    """`last_pinged` (epoch seconds) in CloudStack's date form."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(seconds))


_IDLE = Allocation()


def host_view(row, placement, allocation=None):
    """One host's API view; fields that are None are left out, as CloudStack omits nulls.

    Built field by field rather than filtered afterwards: listHosts builds 500 of these per page."""
    (_host_id, uuid, name, state, resource_state, host_type, ip_address, _cluster_id, hypervisor,
     hypervisor_version, version, host_tags, capabilities, status_message, details, created, last_pinged,
     disconnected, cpu_sockets, cpus, cpu_speed, memory_bytes, cpu_used_percent, memory_used_bytes) = row
    details = details or {}
    allocation = allocation or _IDLE
    view = placement.fields.copy()
    view["id"] = uuid
    view["name"] = name
    view["state"] = state
    view["resourcestate"] = resource_state
    view["type"] = host_type
    view["hypervisor"] = hypervisor
    for key, value in (("ipaddress", ip_address), ("hypervisorversion", hypervisor_version),
                       ("version", version), ("arch", details.get("arch") or placement.arch),
                       ("hosttags", host_tags), ("capabilities", capabilities),
                       ("statusmessage", status_message), ("annotation", details.get("annotation"))):
        if value is not None:
            view[key] = value
    if created is not None:
        view["created"] = date(created)
    if last_pinged is not None:
        view["lastpinged"] = _epoch_date(last_pinged)
    if disconnected is not None:
        view["disconnected"] = date(disconnected)
    if cpus is not None and cpu_speed is not None:
        cpu_total = cpus * cpu_speed
        allocated = _percent_string(allocation.cpu_mhz, cpu_total)
        if cpu_sockets is not None:
            view["cpusockets"] = cpu_sockets
        view["cpunumber"] = cpus
        view["cpuspeed"] = cpu_speed
        view["cpuallocated"] = allocated
        view["cpuallocatedpercentage"] = allocated
        view["cpuallocatedvalue"] = allocation.cpu_mhz
        view["cpuallocatedwithoverprovisioning"] = _percent_string(allocation.cpu_mhz,
                                                                   cpu_total * placement.cpu_ratio)
        view["cpuwithoverprovisioning"] = ratio(cpu_total * placement.cpu_ratio)
        view["cpuused"] = decimal(cpu_used_percent or 0) + "%"
    if memory_bytes is not None:
        view["memorytotal"] = memory_bytes
        view["memorywithoverprovisioning"] = decimal(memory_bytes * placement.memory_ratio)
        view["memoryallocated"] = allocation.memory_bytes
        view["memoryallocatedbytes"] = allocation.memory_bytes
        view["memoryallocatedpercentage"] = _percent_string(allocation.memory_bytes, memory_bytes)
        view["memoryused"] = memory_used_bytes or 0
    return view


def _one_host(ctx, host):
    """A single host (just changed in this transaction) as a command or job result."""
    ctx.session.flush()
    return render_hosts(ctx, view_rows(ctx, [host.id]))[0]


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
def add_host(ctx, p):
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
def update_host(ctx, p):
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
def delete_host(ctx, p):
    """Deletes a host."""
    ctx.hosts.delete_host(p.id, forced=bool(p.forced))
    return Success()


@api_command("reconnectHost", response="host", async_job=True, instance_type="Host", fields=HOST_FIELDS,
             params=[Param("id", Uuid(Host), required=True, description="the host ID")])
def reconnect_host(ctx, p):
    """Reconnects a host."""
    return _one_host(ctx, ctx.hosts.reconnect(p.id))


@api_command("prepareHostForMaintenance", response="host", async_job=True, instance_type="Host",
             fields=HOST_FIELDS, params=[Param("id", Uuid(Host), required=True, description="the host ID")])
def prepare_host_for_maintenance(ctx, p):
    """Prepares a host for maintenance: its running guests are live-migrated to other hosts of its cluster."""
    host_id = p.id.id
    yield from migration.prepare_maintenance(host_id)
    return (yield DbStep(_host_result, host_id))


def _host_result(ctx, host_id):
    return render_hosts(ctx, view_rows(ctx, [host_id]))[0]


@api_command("cancelHostMaintenance", response="host", async_job=True, instance_type="Host",
             fields=HOST_FIELDS, params=[Param("id", Uuid(Host), required=True, description="the host ID")])
def cancel_host_maintenance(ctx, p):
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
def list_hosts(ctx, p):
    """Lists hosts."""
    # Hosts are read as plain rows of the columns a view needs, not as ORM objects.
    q = select(*VIEW_COLUMNS).where(Host.removed.is_(None))
    if p.id is not None:
        q = q.where(Host.id == p.id.id)
    for column, value in ((Host.zone_id, p.zoneid), (Host.pod_id, p.podid), (Host.cluster_id, p.clusterid)):
        if value is not None:
            q = q.where(column == value.id)
    for column, value in ((Host.name, p.name), (Host.type, p.type), (Host.state, p.state),
                          (Host.resource_state, p.resourcestate), (Host.hypervisor, p.hypervisor)):
        if value:
            q = q.where(ci_equals(column, value))
    if p.hahost or p.outofbandmanagementenabled:
        q = q.where(false())   # no host is dedicated to HA or has out-of-band management
    q = keyword_filter(q, p, Host.name, Host.ip_address)
    return page_of(ctx, p, q, Host.id, None, render_many=lambda rows: render_hosts(ctx, rows), whole_rows=True)


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
def find_hosts_for_migration(ctx, p):
    """Find hosts suitable for migrating a virtual machine."""
    found = migration.candidates(ctx, p.virtualmachineid)
    views = {row["id"]: row for row in render_hosts(ctx, view_rows(ctx, [h.id for h, _why in found]))}
    hosts = []
    for host, why in found:
        view = dict(views[host.uuid], suitableformigration=why is None, requiresStorageMotion=False)
        if why is not None:
            view["notsuitablereason"] = why
        hosts.append(view)
    # Suitable hosts first, as CloudStack lists them.
    hosts.sort(key=lambda v: not v["suitableformigration"])
    return ListResult(hosts, len(hosts))
