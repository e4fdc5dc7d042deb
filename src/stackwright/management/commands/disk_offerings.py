"""Disk offerings: createDiskOffering, updateDiskOffering, deleteDiskOffering, listDiskOfferings.

A disk offering sizes a data volume (a fixed `disksize`, or `customized`: the deployment's
`size`) and steers it with its `tags` to primary storage pools whose tags contain them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Integer, Long, Param, Size, String, Tags, Uuid
from ..api.registry import Success, api_command
from ..formatting import compact, date
from ..persistence.models import DiskOffering, Domain, Zone
from ..services.catalog import GiB

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

DISK_OFFERING_FIELDS = (
    ("id", "unique ID of the disk offering"), ("name", "the name of the disk offering"),
    ("displaytext", "an alternate display text of the disk offering."),
    ("disksize", "the size of the disk offering in GB", "long"),
    ("iscustomized", "true if disk offering uses custom size, false otherwise", "boolean"),
    ("tags", "the tags for the disk offering"),
    ("storagetype", "the storage type for this disk offering"),
    ("provisioningtype", "provisioning type used to create volumes. Valid values are thin, sparse, fat."),
    ("miniops", "the min iops of the disk offering", "long"), ("maxiops", "the max iops of the disk offering", "long"),
    ("iscustomizediops", "true if disk offering uses custom iops, false otherwise", "boolean"),
    ("displayoffering", "whether to display the offering to the end user or not.", "boolean"),
    ("domainid", "the domain ID(s) this disk offering belongs to. Ignore this information as it is not currently "
                 "applicable."),
    ("created", "the date this disk offering was created", "date"),
)
ADMIN_PACKAGE = "org.apache.cloudstack.api.command.admin.offering."


def disk_offering_view(offering: DiskOffering, domain: Domain | None = None) -> dict[str, Any]:
    return compact({
        "id": offering.uuid,
        "name": offering.name,
        "displaytext": offering.display_text,
        "disksize": offering.disk_size_bytes // GiB,
        "iscustomized": offering.customized,
        "tags": offering.tags,
        "storagetype": offering.storage_type,
        "provisioningtype": offering.provisioning_type,
        "miniops": offering.min_iops,
        "maxiops": offering.max_iops,
        "iscustomizediops": offering.customized_iops,
        "displayoffering": offering.display_offering,
        "cacheMode": "none",
        "domainid": domain.uuid if domain else None,
        "domain": domain.name if domain else None,
        "sortkey": offering.sort_key,
        "created": date(offering.created),
    })


def _view(ctx: Context, offering: DiskOffering) -> dict[str, Any]:
    return disk_offering_view(offering, ctx.catalog.domain_of(offering))


@api_command(
    "createDiskOffering", response="diskoffering", fields=DISK_OFFERING_FIELDS,
    cmd_class=ADMIN_PACKAGE + "CreateDiskOfferingCmd", params=[
        Param("name", String(), required=True, description="name of the disk offering"),
        Param("displaytext", String(4096), description="An alternate display text of the disk offering, defaults to "
                                                       "'name'."),
        Param("disksize", Size(GiB), description="size of the disk offering in GB (1GB = 1,073,741,824 bytes)"),
        Param("customized", Boolean(), description="whether disk offering size is custom or not"),
        Param("tags", Tags(), description="tags for the disk offering: its volumes go to storage pools carrying "
                                          "all of them"),
        Param("storagetype", String(), description="the storage type of the disk offering. Values are local and "
                                                   "shared."),
        Param("provisioningtype", String(), description="provisioning type used to create volumes. Valid values are "
                                                        "thin, sparse, fat."),
        Param("customizediops", Boolean(), description="whether disk offering iops is custom or not"),
        Param("miniops", Long(), description="min iops of the disk offering"),
        Param("maxiops", Long(), description="max iops of the disk offering"),
        Param("displayoffering", Boolean(), description="an optional field, whether to display the offering to the "
                                                        "end user or not."),
        Param("domainid", Uuid(Domain), description="the ID of the containing domain(s), null for public offerings"),
    ])
def create_disk_offering(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a disk offering."""
    offering = ctx.catalog.create_disk_offering(
        name=p.name, display_text=p.displaytext, disk_size_gb=p.disksize, customized=p.customized, tags=p.tags,
        storage_type=p.storagetype, provisioning_type=p.provisioningtype, customized_iops=p.customizediops,
        min_iops=p.miniops, max_iops=p.maxiops, display_offering=p.displayoffering, domain=p.domainid)
    return _view(ctx, offering)


@api_command(
    "updateDiskOffering", response="diskoffering", fields=DISK_OFFERING_FIELDS,
    cmd_class=ADMIN_PACKAGE + "UpdateDiskOfferingCmd", params=[
        Param("id", Uuid(DiskOffering), required=True, description="ID of the disk offering"),
        Param("name", String(), description="updates name of the disk offering with this value"),
        Param("displaytext", String(4096), description="updates alternate display text of the disk offering with "
                                                       "this value"),
        Param("sortkey", Integer(), description="sort key of the disk offering, integer"),
        Param("tags", Tags(), description="comma-separated list of tags for the disk offering; volumes created "
                                          "later follow them"),
        Param("displayoffering", Boolean(), description="an optional field, whether to display the offering to the "
                                                        "end user or not."),
    ])
def update_disk_offering(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a disk offering."""
    offering = ctx.catalog.update_disk_offering(
        p.id, name=p.name, display_text=p.displaytext, sort_key=p.sortkey, tags=p.tags,
        display_offering=p.displayoffering)
    return _view(ctx, offering)


@api_command("deleteDiskOffering", cmd_class=ADMIN_PACKAGE + "DeleteDiskOfferingCmd", params=[
    Param("id", Uuid(DiskOffering), required=True, description="ID of the disk offering"),
])
def delete_disk_offering(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a disk offering."""
    ctx.catalog.delete_disk_offering(p.id)
    return Success()


@api_command(
    "listDiskOfferings", response="diskoffering", admin_only=False, fields=DISK_OFFERING_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.offering.ListDiskOfferingsCmd", params=[
        Param("id", Uuid(DiskOffering), description="ID of the disk offering"),
        Param("name", String(), description="name of the disk offering"),
        Param("zoneid", Uuid(Zone), description="id of zone disk offering is associated with"),
        Param("domainid", Uuid(Domain), description="the ID of the domain of the disk offering."),
        Param("isrecursive", Boolean(), description="defaults to false"),
        Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's "
                                                "caller"),
    ])
def list_disk_offerings(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all available disk offerings."""
    return listed(ctx.catalog.list_disk_offerings(p), lambda o: _view(ctx, o))
