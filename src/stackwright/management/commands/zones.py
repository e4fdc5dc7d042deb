"""Zones: createZone, updateZone, deleteZone, listZones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, List, Map, Param, String, Uuid, given, map_dict
from ..api.registry import Success, api_command
from ..formatting import compact, date
from ..persistence.models import Domain, Zone

if TYPE_CHECKING:
    from ..api.registry import ListResult
    from types import SimpleNamespace
    from ..context import Context

ZONE_FIELDS = (
    ("id", "the UUID of the zone"), ("name", "zone name"), ("dns1", "the first DNS"),
    ("dns2", "the second DNS"), ("internaldns1", "the first internal DNS"),
    ("internaldns2", "the second internal DNS"), ("guestcidraddress", "the guest CIDR address"),
    ("networktype", "the network type of the zone; can be Basic or Advanced"),
    ("allocationstate", "the allocation state of the cluster"), ("zonetoken", "Zone Token"),
    ("securitygroupsenabled", "true if security groups support is enabled", "boolean"),
    ("localstorageenabled", "true if local storage offering enabled", "boolean"),
    ("dhcpprovider", "the dhcp Provider for the Zone"), ("domain", "Network domain name"),
    ("tags", "the list of resource tags associated with zone.", "list"),
)


def zone_view(zone: Zone, domain_name: str | None = None) -> dict[str, Any]:
    return compact({
        "id": zone.uuid,
        "name": zone.name,
        "description": zone.description,
        "dns1": zone.dns1,
        "dns2": zone.dns2,
        "ip6dns1": zone.ip6_dns1,
        "ip6dns2": zone.ip6_dns2,
        "internaldns1": zone.internal_dns1,
        "internaldns2": zone.internal_dns2,
        "guestcidraddress": zone.guest_cidr,
        "domain": zone.network_domain,
        "domainname": domain_name,
        "networktype": zone.network_type,
        "securitygroupsenabled": zone.security_groups_enabled,
        "allocationstate": zone.allocation_state,
        "zonetoken": zone.zone_token,
        "dhcpprovider": zone.dhcp_provider,
        "localstorageenabled": zone.local_storage_enabled,
        "ispublic": zone.is_public,
        "type": "Core",
        "tags": [],
        "resourcedetails": dict(zone.details) if zone.details else None,
        "created": date(zone.created),
    })


ZONE_PARAMS = [
    Param("dns1", String(), description="the first DNS for the Zone"),
    Param("dns2", String(), description="the second DNS for the Zone"),
    Param("internaldns1", String(), description="the first internal DNS for the Zone"),
    Param("internaldns2", String(), description="the second internal DNS for the Zone"),
    Param("ip6dns1", String(), description="the first DNS for IPv6 network in the Zone"),
    Param("ip6dns2", String(), description="the second DNS for IPv6 network in the Zone"),
    Param("guestcidraddress", String(), description="the guest CIDR address for the Zone"),
    Param("domain", String(), description="Network domain name for the networks in the zone"),
    Param("allocationstate", String(), description="Allocation state of this Zone for allocation of new resources"),
    Param("localstorageenabled", Boolean(), description="true if local storage offering enabled, false otherwise"),
]


@api_command("createZone", response="zone", fields=ZONE_FIELDS, params=[
    Param("name", String(), required=True, description="the name of the Zone"),
    Param("networktype", String(), required=True, description="network type of the zone, can be Basic or Advanced"),
    *[p if p.name != "dns1" else Param("dns1", String(), required=True, description=p.description) for p in ZONE_PARAMS],
    Param("domainid", Uuid(Domain), description="the ID of the containing domain, null for public zones"),
    Param("securitygroupenabled", Boolean(), description="true if network is security group enabled, false otherwise"),
])
def create_zone(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a Zone."""
    zone = ctx.hierarchy.create_zone(
        name=p.name, dns1=p.dns1, network_type=p.networktype, dns2=p.dns2,
        internal_dns1=p.internaldns1, internal_dns2=p.internaldns2, ip6_dns1=p.ip6dns1,
        ip6_dns2=p.ip6dns2, guest_cidr=p.guestcidraddress, network_domain=p.domain,
        domain=p.domainid, allocation=p.allocationstate,
        security_groups=p.securitygroupenabled, local_storage=p.localstorageenabled,
    )
    return zone_view(zone)


_UPDATE_MAP = {
    "name": "name", "dns1": "dns1", "dns2": "dns2", "internaldns1": "internal_dns1",
    "internaldns2": "internal_dns2", "ip6dns1": "ip6_dns1", "ip6dns2": "ip6_dns2",
    "guestcidraddress": "guest_cidr", "domain": "network_domain",
    "allocationstate": "allocation_state", "dhcpprovider": "dhcp_provider",
    "localstorageenabled": "local_storage_enabled", "ispublic": "is_public",
}


@api_command("updateZone", response="zone", fields=ZONE_FIELDS, params=[
    Param("id", Uuid(Zone), required=True, description="the ID of the Zone"),
    Param("name", String(), description="the name of the Zone"),
    *ZONE_PARAMS,
    Param("dhcpprovider", String(), description="the dhcp Provider for the Zone"),
    Param("ispublic", Boolean(), description="updates a private zone to public if set, but not vice-versa"),
    Param("details", Map(), description="the details for the Zone"),
])
def update_zone(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a Zone."""
    changes = {attr: getattr(p, param) for param, attr in _UPDATE_MAP.items() if given(p, param)}
    if p.domain == "":
        changes["network_domain"] = None
    if p.details:
        changes["details"] = map_dict(p.details)
    return zone_view(ctx.hierarchy.update_zone(p.id, changes))


@api_command("deleteZone", params=[
    Param("id", Uuid(Zone), required=True, description="the ID of the Zone"),
])
def delete_zone(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a Zone."""
    ctx.hierarchy.delete_zone(p.id)
    return Success()


@api_command("listZones", response="zone", admin_only=False, cacheable=True, fields=ZONE_FIELDS, params=[
    Param("id", Uuid(Zone), description="the ID of the zone"),
    Param("ids", List(Uuid(Zone)), description="the IDs of the zones, mutually exclusive with id"),
    Param("name", String(), description="the name of the zone"),
    Param("available", Boolean(), description="true if you want to retrieve all available Zones"),
    Param("domainid", Uuid(Domain), description="the ID of the domain associated with the zone"),
    Param("networktype", String(), description="the network type of the zone that the virtual machine belongs to"),
    Param("showcapacities", Boolean(), description="flag to display the capacity of the zones"),
    Param("tags", Map(), description="List zones by resource tags (key/value pairs)"),
])
def list_zones(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists zones."""

    def render(zone: Zone):
        view = zone_view(zone, ctx.hierarchy.domain_name(zone.domain_id))
        if p.showcapacities:
            view["capacity"] = ctx.capacity.rows(zone=zone)
        return view

    return listed(ctx.hierarchy.list_zones(p), render)
