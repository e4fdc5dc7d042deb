"""Service offerings: listServiceOfferings, createServiceOffering, updateServiceOffering,
deleteServiceOffering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Integer, List, Param, String, Tags, Uuid
from ..api.registry import Success, api_command
from ..formatting import compact, date
from ..persistence.models import Domain, ServiceOffering, Zone

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

OFFERING_FIELDS = (
    ("id", "the id of the service offering"), ("name", "the name of the service offering"),
    ("displaytext", "an alternate display text of the service offering."),
    ("cpunumber", "the number of CPU", "integer"), ("cpuspeed", "the clock rate CPU speed in Mhz", "integer"),
    ("memory", "the memory in MB", "integer"), ("offerha", "the ha support in the service offering", "boolean"),
    ("storagetype", "the storage type for this service offering"),
    ("hosttags", "the host tag for the service offering"),
    ("storagetags", "the tags for the service offering: its root volumes go to pools carrying all of them"),
    ("issystem", "is this a system vm offering", "boolean"),
    ("iscustomized", "is true if the offering is customized", "boolean"),
    ("created", "the date this service offering was created", "date"),
)
CMD_PACKAGE = "org.apache.cloudstack.api.command.admin.offering."


def offering_view(offering: ServiceOffering, domain: Domain | None = None) -> dict[str, Any]:
    return compact({
        "id": offering.uuid,
        "name": offering.name,
        "displaytext": offering.display_text,
        "cpunumber": offering.cpu_number,
        "cpuspeed": offering.cpu_speed,
        "memory": offering.memory_mb,
        "offerha": offering.offer_ha,
        "limitcpuuse": offering.limit_cpu_use,
        "storagetype": offering.storage_type,
        "provisioningtype": "thin",
        "hosttags": offering.host_tags,
        "storagetags": offering.storage_tags,
        "issystem": offering.is_system,
        "isvolatile": False,
        "iscustomized": offering.is_customized,
        "defaultuse": False,
        "domainid": domain.uuid if domain else None,
        "domain": domain.name if domain else None,
        "sortkey": offering.sort_key,
        "created": date(offering.created),
    })


def _domain(ctx: Context, offering: ServiceOffering) -> Domain | None:
    return ctx.catalog.domain_of(offering)


@api_command(
    "createServiceOffering", response="serviceoffering", fields=OFFERING_FIELDS,
    cmd_class=CMD_PACKAGE + "CreateServiceOfferingCmd", params=[
        Param("name", String(), required=True, description="the name of the service offering"),
        Param("displaytext", String(4096), description="the display text of the service offering, defaults to 'name'"),
        Param("cpunumber", Integer(), description="the CPU number of the service offering"),
        Param("cpuspeed", Integer(), description="the CPU speed of the service offering in MHz."),
        Param("memory", Integer(), description="the total memory of the service offering in MB"),
        Param("offerha", Boolean(), description="the HA for the service offering"),
        Param("limitcpuuse", Boolean(), description="restrict the CPU usage to committed service offering"),
        Param("hosttags", List(), description="the host tag for this service offering."),
        Param("tags", Tags(), description="the storage tags for this service offering: root volumes go to storage "
                                          "pools carrying all of them"),
        Param("storagetype", String(), description="the storage type of the service offering. Values are local and shared."),
        Param("domainid", Uuid(Domain), description="the ID of the containing domain(s), null for public offerings"),
    ])
def create_service_offering(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a service offering."""
    offering = ctx.catalog.create_offering(
        name=p.name, display_text=p.displaytext, cpu_number=p.cpunumber, cpu_speed=p.cpuspeed, memory=p.memory,
        offer_ha=p.offerha, limit_cpu_use=p.limitcpuuse, host_tags=p.hosttags, storage_tags=p.tags, storage_type=p.storagetype,
        domain=p.domainid)
    return offering_view(offering, _domain(ctx, offering))


@api_command(
    "updateServiceOffering", response="serviceoffering", fields=OFFERING_FIELDS,
    cmd_class=CMD_PACKAGE + "UpdateServiceOfferingCmd", params=[
        Param("id", Uuid(ServiceOffering), required=True, description="the ID of the service offering to be updated"),
        Param("name", String(), description="the name of the service offering to be updated"),
        Param("displaytext", String(4096), description="the display text of the service offering to be updated"),
        Param("sortkey", Integer(), description="sort key of the service offering, integer"),
    ])
def update_service_offering(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a service offering."""
    offering = ctx.catalog.update_offering(p.id, name=p.name, display_text=p.displaytext, sort_key=p.sortkey)
    return offering_view(offering, _domain(ctx, offering))


@api_command("deleteServiceOffering", cmd_class=CMD_PACKAGE + "DeleteServiceOfferingCmd", params=[
    Param("id", Uuid(ServiceOffering), required=True, description="the ID of the service offering"),
])
def delete_service_offering(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a service offering."""
    ctx.catalog.delete_offering(p.id)
    return Success()


@api_command(
    "listServiceOfferings", response="serviceoffering", admin_only=False, fields=OFFERING_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.offering.ListServiceOfferingsCmd", params=[
        Param("id", Uuid(ServiceOffering), description="ID of the service offering"),
        Param("name", String(), description="name of the service offering"),
        Param("zoneid", Uuid(Zone), description="id of zone the offering is associated with"),
        Param("domainid", Uuid(Domain), description="the ID of the domain associated with the service offering"),
        Param("issystem", Boolean(), description="is this a system vm offering"),
        Param("isrecursive", Boolean(), description="defaults to false"),
        Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
    ])
def list_service_offerings(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all available service offerings."""
    return listed(ctx.catalog.list_offerings(p), lambda o: offering_view(o, _domain(ctx, o)))
