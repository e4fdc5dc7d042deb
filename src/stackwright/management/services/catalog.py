"""What guests are made of: service offerings (CPU, memory) and templates (root disks).

`seed()` puts the built-in offerings and templates of a new installation in place; it is
run by `stackwright-setup-databases` and is idempotent. Seeded rows carry a `unique_name`,
so an offering or template the operator deleted is not brought back by the next setup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import false, or_, select

from ..errors import InvalidParameterValue
from ..persistence.models import Account, DiskOffering, Domain, GuestOs, ServiceOffering, Template, Zone, utcnow
from . import guest_os
from .hosts import tag_string
from .queries import NOCASE, ROW, Filter, ci_equals, filtered, keyword, page, rows_by_id

if TYPE_CHECKING:
    from types import SimpleNamespace
    from ..services.queries import Page
    from sqlalchemy import Select
    from sqlalchemy.orm import Session

    from ..context import Context

log = logging.getLogger(__name__)

GiB = 1024 ** 3
MAX_INT = 2 ** 31 - 1
MIN_MEMORY_MB = 32
STORAGE_TYPES = ("shared", "local")
LOCAL = "local"
PROVISIONING_TYPES = ("thin", "sparse", "fat")
SIZE_MIN_KEY, SIZE_MAX_KEY = "custom.diskoffering.size.min", "custom.diskoffering.size.max"
TEMPLATE_FILTERS = ("featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all")
READY = "Download Complete"

BUILTIN_OFFERINGS = (
    dict(unique_name="Cloud.Com-Small Instance", name="Small Instance",
         display_text="Small Instance, 1 CPU, 500 MHz, 512 MB", cpu_number=1, cpu_speed=500, memory_mb=512),
    dict(unique_name="Cloud.Com-Medium Instance", name="Medium Instance",
         display_text="Medium Instance, 1 CPU, 1000 MHz, 1024 MB", cpu_number=1, cpu_speed=1000, memory_mb=1024),
)

# A blank qcow2 root disk: the guest boots into its firmware, which is enough to define,
# start, stop and reboot it. The Simulator template keeps the name CloudStack's simulator
# seeds, which existing playbooks and test suites look up.
BUILTIN_TEMPLATES = (
    dict(unique_name="stackwright-blank-kvm", name="Blank disk (no OS)",
         display_text="Empty 1 GiB qcow2 root disk; the guest boots into its firmware",
         format="QCOW2", hypervisor="KVM", size_bytes=GiB, os_type="Other (64-bit)"),
    dict(unique_name="centos56-x86_64-simulator", name="CentOS 5.6 (64-bit) no GUI (Simulator)",
         display_text="CentOS 5.6 (64-bit) no GUI (Simulator)",
         format="QCOW2", hypervisor="Simulator", size_bytes=2 * GiB, os_type="CentOS 5.6 (64-bit)"),
)


def seed(session: Session) -> list[str]:
    """Create the built-in offerings and templates that are missing; returns what was added."""
    added = []
    for spec in BUILTIN_OFFERINGS:
        if _by_unique_name(session, ServiceOffering, spec["unique_name"]) is None:
            session.add(ServiceOffering(storage_type="shared", **spec))
            added.append(spec["name"])
    for spec in BUILTIN_TEMPLATES:
        if _by_unique_name(session, Template, spec["unique_name"]) is None:
            session.add(Template(template_type="BUILTIN", is_public=True, is_featured=True, is_ready=True,
                                 status=READY, **spec))
            added.append(spec["name"])
    session.flush()
    added += guest_os.seed(session)
    for template in session.execute(select(Template).where(Template.os_type_id.is_(None),
                                                           Template.os_type.is_not(None))).scalars():
        found = guest_os.by_name(session, template.os_type)
        template.os_type_id = found.id if found is not None else None
    if added:
        log.info("seeded %s", ", ".join(added))
    return added


def _by_unique_name(session: Session, model: type[ServiceOffering] | type[Template],
                    unique_name: str) -> ServiceOffering | Template | None:
    return session.execute(select(model).where(model.unique_name == unique_name)).scalar_one_or_none()


def _storage_type(value: str | None) -> str:
    """An offering's storage type: `shared`. `local` asks for volumes on host-local primary
    storage, which this cloud does not have (pools are cluster- or zone-wide), so an offering
    of it could never be deployed: it is refused when the offering is made."""
    storage_type = (value or "shared").lower()
    if storage_type not in STORAGE_TYPES:
        raise InvalidParameterValue(
            f"Invalid storage type {storage_type} specified, valid types are: 'local' and 'shared'")
    if storage_type == LOCAL:
        raise InvalidParameterValue(
            "storagetype local is not supported: volumes live on shared primary storage (cluster- or zone-wide "
            "pools); there is no host-local storage to place them on; use storagetype=shared")
    return storage_type


class CatalogService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    # --- service offerings -------------------------------------------------------------

    def create_offering(self, *, name: str, display_text: str | None = None, cpu_number: int | None = None,
                        cpu_speed: int | None = None, memory: int | None = None, offer_ha: bool = False,
                        limit_cpu_use: bool = False, host_tags: Iterable[str] | None = None,
                        storage_tags: Iterable[str] | None = None, storage_type: str | None = None,
                        domain: Domain | None = None) -> ServiceOffering:
        sizes = (cpu_number, cpu_speed, memory)
        if any(v is not None for v in sizes) and any(v is None for v in sizes):
            raise InvalidParameterValue(
                "For creating a custom compute offering cpu, cpu speed and memory all should be null; "
                "otherwise pass all three of cpunumber, cpuspeed and memory")
        if cpu_number is not None and not 1 <= cpu_number <= MAX_INT:
            raise InvalidParameterValue(
                f"Failed to create service offering {name}: specify the cpu number value between 1 and {MAX_INT}")
        if cpu_speed is not None and not 1 <= cpu_speed <= MAX_INT:
            raise InvalidParameterValue(
                f"Failed to create service offering {name}: specify the cpu speed value between 1 and {MAX_INT}")
        if memory is not None and not MIN_MEMORY_MB <= memory <= MAX_INT:
            raise InvalidParameterValue(
                f"Failed to create service offering {name}: specify the memory value between "
                f"{MIN_MEMORY_MB} and {MAX_INT} MB")
        storage_type = _storage_type(storage_type)
        if not name.strip():
            raise InvalidParameterValue("Failed to create service offering: the name cannot be blank")
        offering = ServiceOffering(
            name=name, display_text=display_text or name, cpu_number=cpu_number, cpu_speed=cpu_speed,
            memory_mb=memory, offer_ha=bool(offer_ha), limit_cpu_use=bool(limit_cpu_use),
            host_tags=tag_string(host_tags), storage_tags=tag_string(storage_tags), storage_type=storage_type,
            domain_id=domain.id if domain is not None else None,
        )
        self.session.add(offering)
        self.session.flush()
        self.ctx.event("SERVICE.OFFERING.CREATE", f"Successfully created service offering {name}", offering.uuid)
        return offering

    def update_offering(self, offering: ServiceOffering, *, name: str | None = None,
                        display_text: str | None = None, sort_key: int | None = None) -> ServiceOffering:
        self.live_offering(offering)
        if name is not None:
            if not name.strip():
                raise InvalidParameterValue("the name of a service offering cannot be blank")
            offering.name = name
        if display_text is not None:
            offering.display_text = display_text
        if sort_key is not None:
            offering.sort_key = sort_key
        self.session.flush()
        self.ctx.event("SERVICE.OFFERING.EDIT", f"Successfully updated service offering {offering.name}",
                       offering.uuid)
        return offering

    def delete_offering(self, offering: ServiceOffering) -> None:
        self.live_offering(offering)
        # Guests copy their sizes at deploy time, so they keep running on a deleted offering.
        offering.removed = utcnow()
        self.ctx.event("SERVICE.OFFERING.DELETE", f"Successfully deleted service offering {offering.name}",
                       offering.uuid)

    @staticmethod
    def live_offering(offering: ServiceOffering) -> ServiceOffering:
        if offering.removed is not None:
            raise InvalidParameterValue(f"Unable to find service offering by id {offering.uuid}")
        return offering

    # --- disk offerings ----------------------------------------------------------------

    def create_disk_offering(self, *, name: str, display_text: str | None = None, disk_size_gb: int | None = None,
                             customized: bool | None = None, tags: Iterable[str] | None = None,
                             storage_type: str | None = None, provisioning_type: str | None = None,
                             customized_iops: bool | None = None, min_iops: int | None = None,
                             max_iops: int | None = None, display_offering: bool | None = None,
                             domain: Domain | None = None) -> DiskOffering:
        """A disk offering: `disk_size_gb` GB, or (customized) the size each deployment asks for
        within custom.diskoffering.size.min and .max."""
        if not name.strip():
            raise InvalidParameterValue("Failed to create disk offering: the name cannot be blank")
        if not customized and disk_size_gb is None:
            raise InvalidParameterValue("Disksize is required for a non-customized disk offering")
        if customized and disk_size_gb is not None:
            raise InvalidParameterValue(
                "Disksize can't be specified for a customized disk offering: the deployment passes the size")
        if disk_size_gb is not None:
            self.check_disk_size(disk_size_gb, "Failed to create disk offering")
        if customized_iops and (min_iops is not None or max_iops is not None):
            raise InvalidParameterValue("Min IOPS and max IOPS cannot be specified when customized IOPS is true")
        for value, what in ((min_iops, "miniops"), (max_iops, "maxiops")):
            if value is not None and value < 0:
                raise InvalidParameterValue(f"{what} must be a positive number, got {value}")
        if min_iops is not None and max_iops is not None and min_iops > max_iops:
            raise InvalidParameterValue("The min IOPS must be less than or equal to the max IOPS.")
        provisioning = (provisioning_type or "thin").lower()
        if provisioning not in PROVISIONING_TYPES:
            raise InvalidParameterValue(
                f"Invalid provisioning type {provisioning_type}; use one of {', '.join(PROVISIONING_TYPES)}")
        offering = DiskOffering(
            name=name, display_text=display_text or name,
            disk_size_bytes=(disk_size_gb or 0) * GiB, customized=bool(customized),
            tags=tag_string(tags), storage_type=_storage_type(storage_type), provisioning_type=provisioning,
            customized_iops=customized_iops, min_iops=min_iops, max_iops=max_iops,
            display_offering=display_offering is not False, domain_id=domain.id if domain is not None else None,
        )
        self.session.add(offering)
        self.session.flush()
        self.ctx.event("DISK.OFFERING.CREATE", f"Successfully created disk offering {name}", offering.uuid)
        return offering

    def update_disk_offering(self, offering: DiskOffering, *, name: str | None = None,
                             display_text: str | None = None, sort_key: int | None = None,
                             tags: Iterable[str] | None = None,
                             display_offering: bool | None = None) -> DiskOffering:
        """Rename, re-describe, re-sort, re-tag (placement of later volumes only) or hide it."""
        self.live_disk_offering(offering)
        if name is not None:
            if not name.strip():
                raise InvalidParameterValue("the name of a disk offering cannot be blank")
            offering.name = name
        if display_text is not None:
            offering.display_text = display_text
        if sort_key is not None:
            offering.sort_key = sort_key
        if tags is not None:
            offering.tags = tag_string(tags)
        if display_offering is not None:
            offering.display_offering = display_offering
        self.session.flush()
        self.ctx.event("DISK.OFFERING.EDIT", f"Successfully updated disk offering {offering.name}", offering.uuid)
        return offering

    def delete_disk_offering(self, offering: DiskOffering) -> None:
        self.live_disk_offering(offering)
        # Volumes keep their size and pool: they live on without the offering.
        offering.removed = utcnow()
        self.ctx.event("DISK.OFFERING.DELETE", f"Successfully deleted disk offering {offering.name}", offering.uuid)

    @staticmethod
    def live_disk_offering(offering: DiskOffering) -> DiskOffering:
        if offering.removed is not None:
            raise InvalidParameterValue(f"Unable to find disk offering by id {offering.uuid}")
        return offering

    def disk_size_range(self) -> tuple[int, int]:
        """(minimum, maximum) GB of a disk: custom.diskoffering.size.min and .max."""
        settings = self.ctx.settings
        return settings.typed(SIZE_MIN_KEY), settings.typed(SIZE_MAX_KEY)

    def check_disk_size(self, size_gb: int, action: str) -> int:
        """`size_gb` when it lies within custom.diskoffering.size.min and .max, else CloudStack's 431."""
        low, high = self.disk_size_range()
        if not low <= size_gb <= high:
            raise InvalidParameterValue(
                f"{action}. Volume size: {size_gb}GB is out of allowed range. Max: {high} Min:{low} "
                f"(settings {SIZE_MAX_KEY} and {SIZE_MIN_KEY})")
        return size_gb

    def data_disk_bytes(self, offering: DiskOffering, size_gb: int | None) -> int:
        """The size of a data volume of `offering`: its own, or (customized) `size_gb` in range."""
        self.live_disk_offering(offering)
        if not offering.customized:
            return offering.disk_size_bytes
        if size_gb is None:
            raise InvalidParameterValue(
                f"This disk offering requires a custom size specified: disk offering {offering.name} is customized; "
                "pass size (GB)")
        return self.check_disk_size(size_gb, "VM Creation failed") * GiB

    def list_disk_offerings(self, p: SimpleNamespace) -> Page:
        q = filtered(select(DiskOffering).where(DiskOffering.removed.is_(None)), DISK_OFFERING_FILTERS, p)
        if not self.ctx.is_root_admin:
            q = q.where(DiskOffering.display_offering.is_(True))
            if p.domainid is None:
                q = q.where(or_(DiskOffering.domain_id.is_(None),
                                DiskOffering.domain_id == self.ctx.account.domain_id))
        return page(self.ctx, p, q, DiskOffering.id)

    # --- templates -----------------------------------------------------------------------

    def templates(self, template_filter: str, *, zone: Zone | None = None,
                  hypervisor: str | None = None, iso: bool = False) -> Select[tuple[Template]]:
        """A select of the templates (or ISOs) `template_filter` shows the caller (CloudStack's filters)."""
        wanted = template_filter.lower()
        if wanted not in TEMPLATE_FILTERS:
            what = "isofilter" if iso else "templatefilter"
            raise InvalidParameterValue(
                f"Please specify a valid {'ISO' if iso else 'template'} filter; {what} must be one of "
                f"{', '.join(TEMPLATE_FILTERS)}")
        q = select(Template).where(Template.removed.is_(None),
                                   (Template.format == "ISO") if iso else (Template.format != "ISO"))
        account_id = self.ctx.account.id if self.ctx.account is not None else None
        own = Template.account_id == account_id if account_id is not None else false()
        if wanted == "featured":
            q = q.where(Template.is_featured.is_(True), Template.is_public.is_(True))
        elif wanted == "self":
            q = q.where(own)
        elif wanted == "selfexecutable":
            q = q.where(own, Template.is_ready.is_(True))
        elif wanted == "sharedexecutable":
            # Templates shared with an account by permission: none are, yet.
            q = q.where(false())
        elif wanted == "executable":
            q = q.where(or_(own, Template.is_public.is_(True)), Template.is_ready.is_(True))
        elif wanted == "community":
            q = q.where(Template.is_public.is_(True), Template.is_featured.is_(False))
        elif not self.ctx.is_root_admin:
            q = q.where(or_(own, Template.is_public.is_(True)))
        if zone is not None:
            q = q.where(or_(Template.zone_id.is_(None), Template.zone_id == zone.id))
        if hypervisor:
            q = q.where(Template.hypervisor == hypervisor)
        return q

    def usable_template(self, template: Template, zone: Zone) -> Template:
        """The template a guest of `zone` may be deployed from, or CloudStack's 431."""
        if template.removed is not None:
            raise InvalidParameterValue(f"Unable to use template {template.uuid}: it was deleted")
        if template.is_iso:
            raise InvalidParameterValue(f"Unable to deploy from {template.uuid}: it is an ISO, not a template")
        downloaded = template.url is None or self.ctx.templates.ready_ref(template, zone) is not None
        if not template.is_ready or not downloaded or (template.zone_id is not None and template.zone_id != zone.id):
            raise InvalidParameterValue(
                f"Template {template.uuid} has not been completely downloaded to zone {zone.uuid}")
        if not template.is_public and not self.ctx.is_root_admin and (
                self.ctx.account is None or template.account_id != self.ctx.account.id):
            raise InvalidParameterValue(
                f"Unable to use template {template.uuid}: it is private to another account")
        return template

    # --- reads: listServiceOfferings, listTemplates ------------------------------------

    def list_offerings(self, p: SimpleNamespace) -> Page:
        q = select(ServiceOffering).where(ServiceOffering.removed.is_(None),
                                          ServiceOffering.is_system.is_(bool(p.issystem)))
        q = filtered(q, OFFERING_FILTERS, p)
        if p.domainid is None and not self.ctx.is_root_admin:
            q = q.where(or_(ServiceOffering.domain_id.is_(None),
                            ServiceOffering.domain_id == self.ctx.account.domain_id))
        return page(self.ctx, p, q, ServiceOffering.id)

    def domain_of(self, row: ServiceOffering) -> Domain | None:
        """The Domain an offering (or another row with a domain_id) is restricted to, or None."""
        return self.session.get(Domain, row.domain_id) if row.domain_id else None

    def list_templates(self, p: SimpleNamespace, hypervisor: str | None = None, *, template_filter: str,
                       iso: bool = False) -> Page:
        q = filtered(self.templates(template_filter, zone=p.zoneid, hypervisor=hypervisor, iso=iso),
                     TEMPLATE_LIST_FILTERS, p)
        if p.account:
            q = q.join(Account, Account.id == Template.account_id).where(ci_equals(Account.name, p.account))
        return page(self.ctx, p, q, Template.id)

    def template_view_context(self, templates: list[Template]) -> tuple[dict[int, Zone], dict[int, Account]]:
        """({zone id: Zone}, {account id: Account}) the views of `templates` refer to, one query each."""
        return (rows_by_id(self.session, Zone, (t.zone_id for t in templates)),
                rows_by_id(self.session, Account, (t.account_id for t in templates)))

    def zones_by_id(self, ids: Iterable[int | None]) -> dict[int, Zone]:
        return rows_by_id(self.session, Zone, ids)

    def os_types_by_id(self, ids: Iterable[int | None]) -> dict[int, GuestOs]:
        return rows_by_id(self.session, GuestOs, ids)


OFFERING_FILTERS = (
    Filter("id", ServiceOffering.id, ROW),
    Filter("name", ServiceOffering.name, NOCASE),
    Filter("domainid", ServiceOffering.domain_id, ROW),
    keyword(ServiceOffering.name, ServiceOffering.display_text),
)

DISK_OFFERING_FILTERS = (
    Filter("id", DiskOffering.id, ROW),
    Filter("name", DiskOffering.name, NOCASE),
    Filter("domainid", DiskOffering.domain_id, ROW),
    keyword(DiskOffering.name, DiskOffering.display_text),
)

TEMPLATE_LIST_FILTERS = (
    Filter("id", Template.id, ROW),
    Filter("name", Template.name, NOCASE),
    Filter("bootable", Template.bootable),
    Filter("ispublic", Template.is_public),
    Filter("isready", Template.is_ready),
    keyword(Template.name, Template.display_text),
)
