"""Physical networks and traffic types.

createPhysicalNetwork and addTrafficType are async creates: the row exists as soon as the
request returns (its id is in the answer), and the job reports the finished object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from ..api.listing import listed
from ..api.params import List, Param, String, Uuid
from ..api.registry import ListResult, Success, api_command
from ..formatting import compact
from ..persistence.models import PhysicalNetwork, TrafficType, Zone
from ..services.queries import by_uuid

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context
    from ..persistence.models import Entity

E = TypeVar("E", bound="Entity")


def physical_network_view(ctx: Context, network: PhysicalNetwork) -> dict[str, Any]:
    zone = ctx.networks.zone_of(network)
    return compact({
        "id": network.uuid, "name": network.name, "zoneid": zone.uuid, "zonename": zone.name,
        "state": network.state, "vlan": network.vlan, "tags": network.tags,
        "isolationmethods": network.isolation_methods,
        "broadcastdomainrange": network.broadcast_domain_range,
        "networkspeed": network.network_speed,
    })


def traffic_type_view(ctx: Context, tt: TrafficType) -> dict[str, Any]:
    network = ctx.networks.network_of(tt)
    return compact({
        "id": tt.uuid, "physicalnetworkid": network.uuid, "traffictype": tt.traffic_type,
        "kvmnetworklabel": tt.kvm_label, "xennetworklabel": tt.xen_label,
        "vmwarenetworklabel": tt.vmware_label, "vlan": tt.vlan,
    })


def _job_row(ctx: Context, model: type[E]) -> E:
    return by_uuid(ctx.session, model, ctx.job.instance_uuid)


def _prepare_physical_network(ctx: Context, p: SimpleNamespace) -> str:
    network = ctx.networks.create_physical_network(
        zone=p.zoneid, name=p.name, isolation_methods=p.isolationmethods,
        broadcast_domain_range=p.broadcastdomainrange, vlan=p.vlan, tags=p.tags,
        network_speed=p.networkspeed,
    )
    return network.uuid


@api_command(
    "createPhysicalNetwork", response="physicalnetwork", async_job=True,
    prepare=_prepare_physical_network, instance_type="PhysicalNetwork", params=[
        Param("name", String(), required=True, description="the name of the physical network"),
        Param("zoneid", Uuid(Zone), required=True, description="the Zone ID for the physical network"),
        Param("isolationmethods", List(), description="the isolation method for the physical network[VLAN/L3/GRE/VXLAN]"),
        Param("broadcastdomainrange", String(), description="the broadcast domain range for the physical network[Pod or Zone]"),
        Param("vlan", String(), description="the VLAN for the physical network"),
        Param("tags", List(), description="Tag the physical network"),
        Param("networkspeed", String(), description="the speed for the physical network[1G/10G]"),
        Param("domainid", String(), description="domain ID of the account owning a physical network"),
    ])
def create_physical_network(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a physical network."""
    return physical_network_view(ctx, _job_row(ctx, PhysicalNetwork))


@api_command(
    "updatePhysicalNetwork", response="physicalnetwork", async_job=True,
    instance_type="PhysicalNetwork", params=[
        Param("id", Uuid(PhysicalNetwork), required=True, description="physical network id"),
        Param("state", String(), description="Enabled/Disabled"),
        Param("vlan", String(), description="the VLAN for the physical network"),
        Param("tags", List(), description="Tag the physical network"),
        Param("networkspeed", String(), description="the speed for the physical network[1G/10G]"),
    ])
def update_physical_network(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a physical network."""
    network = ctx.networks.update_physical_network(
        p.id, state=p.state, vlan=p.vlan, tags=p.tags, network_speed=p.networkspeed)
    return physical_network_view(ctx, network)


@api_command("deletePhysicalNetwork", async_job=True, instance_type="PhysicalNetwork", params=[
    Param("id", Uuid(PhysicalNetwork), required=True, description="the ID of the Physical network"),
])
def delete_physical_network(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a physical network."""
    ctx.networks.delete_physical_network(p.id)
    return Success()


@api_command("listPhysicalNetworks", response="physicalnetwork", params=[
    Param("id", Uuid(PhysicalNetwork), description="list physical network by id"),
    Param("name", String(), description="search by name"),
    Param("zoneid", Uuid(Zone), description="the Zone ID for the physical network"),
])
def list_physical_networks(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists physical networks."""
    return listed(ctx.networks.list_physical_networks(p), lambda n: physical_network_view(ctx, n))


def _prepare_traffic_type(ctx: Context, p: SimpleNamespace) -> str:
    tt = ctx.networks.add_traffic_type(
        p.physicalnetworkid, p.traffictype, kvm_label=p.kvmnetworklabel,
        xen_label=p.xennetworklabel, vmware_label=p.vmwarenetworklabel, vlan=p.vlan)
    return tt.uuid


@api_command(
    "addTrafficType", response="traffictype", async_job=True,
    prepare=_prepare_traffic_type, instance_type="TrafficType", params=[
        Param("physicalnetworkid", Uuid(PhysicalNetwork), required=True, description="the Physical Network ID"),
        Param("traffictype", String(), required=True, description="the trafficType to be added to the physical network"),
        Param("kvmnetworklabel", String(), description="The network name label of the physical device dedicated to this traffic on a KVM host"),
        Param("xennetworklabel", String(), description="The network name label of the physical device dedicated to this traffic on a XenServer host"),
        Param("vmwarenetworklabel", String(), description="The network name label of the physical device dedicated to this traffic on a VMware host"),
        Param("vlan", String(), description="The VLAN id to be used for Management traffic by VMware host"),
        Param("isolationmethod", String(), description="Used if physical network has multiple isolation types"),
    ])
def add_traffic_type(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Adds traffic type to a physical network."""
    return traffic_type_view(ctx, _job_row(ctx, TrafficType))


@api_command("updateTrafficType", response="traffictype", async_job=True, instance_type="TrafficType", params=[
    Param("id", Uuid(TrafficType), required=True, description="traffic type id"),
    Param("kvmnetworklabel", String(), description="The network name label of the physical device dedicated to this traffic on a KVM host"),
    Param("xennetworklabel", String(), description="The network name label of the physical device dedicated to this traffic on a XenServer host"),
    Param("vmwarenetworklabel", String(), description="The network name label of the physical device dedicated to this traffic on a VMware host"),
])
def update_traffic_type(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates traffic type of a physical network."""
    tt = ctx.networks.update_traffic_type(p.id, kvm_label=p.kvmnetworklabel,
                                          xen_label=p.xennetworklabel, vmware_label=p.vmwarenetworklabel)
    return traffic_type_view(ctx, tt)


@api_command("deleteTrafficType", async_job=True, instance_type="TrafficType", params=[
    Param("id", Uuid(TrafficType), required=True, description="traffic type id"),
])
def delete_traffic_type(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes traffic type of a physical network."""
    ctx.networks.delete_traffic_type(p.id)
    return Success()


@api_command("listTrafficTypes", response="traffictype", params=[
    Param("physicalnetworkid", Uuid(PhysicalNetwork), required=True, description="the Physical Network ID"),
])
def list_traffic_types(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists traffic types of a given physical network."""
    items = [traffic_type_view(ctx, tt) for tt in ctx.networks.traffic_types(p.physicalnetworkid)]
    return ListResult(items, len(items))
