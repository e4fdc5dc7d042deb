"""Templates and ISOs an account registers from an http(s) URL, and the OS catalogue they name.

`register()` creates the template and one copy record per image store
(`TemplateStoreRef`: one store of its zone, or of every zone for `zoneid=-1`), and gives
each copy a system job (services/template_jobs.py) that has a KVM host of the zone
download it onto the store. The URL must not lead to the cloud's own networks: a
host name resolving to a loopback or link-local address, or into a pod's management
network, is refused unless `secstorage.allowed.internal.sites` (a CIDR list) allows it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from stackwright.protocol import sites

from ..errors import InvalidParameterValue, ResourceUnavailable
from ..persistence.models import (
    GuestOs,
    GuestOsCategory,
    ImageStore,
    Pod,
    Template,
    TemplatePoolRef,
    TemplateStoreRef,
    Volume,
    Zone,
)
from .queries import NOCASE, ROW, Filter, filtered, keyword, page

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context
    from ..persistence.models import Account
    from .queries import Page

log = logging.getLogger(__name__)

GiB = 1024 ** 3
TEMPLATE_FORMATS = ("QCOW2", "RAW")
ISO_FORMAT = "ISO"
HYPERVISORS = ("KVM",)
ALLOWED_SITES = sites.ALLOWED_SITES
MAX_SIZE = "max.template.iso.size"
CHECKSUM = re.compile(r"(\{(MD5|SHA-1|SHA-224|SHA-256|SHA-384|SHA-512)\})?([0-9a-fA-F]+)")
DIGEST_LENGTHS = {"MD5": 32, "SHA-1": 40, "SHA-224": 56, "SHA-256": 64, "SHA-384": 96, "SHA-512": 128}

# The system job of one copy's download (services/template_jobs.py).
DOWNLOAD_JOB = "downloadTemplate"
# TemplateStoreRef.state
ALLOCATED, DOWNLOADING, READY, FAILED = "Allocated", "Downloading", "Ready", "Failed"
DOWNLOAD_COMPLETE = "Download Complete"
# TemplatePoolRef.state
CACHE_CREATING, CACHE_READY = "Creating", "Ready"


def progress_status(percent: int) -> str:
    return f"{percent}% Downloaded"


def failed_status(reason: str) -> str:
    return f"Download failed: {reason}"[:1024]


def install_directory(account_id: int, template_id: int) -> str:
    """CloudStack's directory of a template on an image store."""
    return f"template/tmpl/{account_id}/{template_id}"


def file_name(template: Template) -> str:
    return f"{template.uuid}.{template.format.lower()}"


def check_checksum(checksum: str | None) -> str | None:
    """A checksum as registered: CloudStack's `{ALGO}hex`, or bare hex (MD5)."""
    if not checksum:
        return None
    found = CHECKSUM.fullmatch(checksum.strip())
    algorithm = (found.group(2) if found else None) or "MD5"
    if found is None or len(found.group(3)) != DIGEST_LENGTHS[algorithm]:
        raise InvalidParameterValue(
            f"Invalid checksum {checksum}: give an MD5 digest in hex, or one of "
            f"{', '.join('{' + a + '}' for a in DIGEST_LENGTHS)} followed by its digest in hex")
    return checksum.strip()


class TemplateService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    # --- registerTemplate, registerIso ----------------------------------------------------

    def register(self, *, name: str, display_text: str | None, url: str, fmt: str, hypervisor: str | None,
                 os_type: GuestOs | None, zone: Zone | None, owner: Account, is_public: bool = False,
                 is_featured: bool = False, checksum: str | None = None, bootable: bool = True) -> Template:
        """A new template (or ISO, `fmt` ISO) and its downloads, one per image store of `zone`
        (None: of every zone)."""
        iso = fmt == ISO_FORMAT
        what = "ISO" if iso else "template"
        if not name or not name.strip():
            raise InvalidParameterValue(f"Failed to register {what}: the name cannot be blank")
        if not iso and fmt not in TEMPLATE_FORMATS:
            raise InvalidParameterValue(
                f"Invalid format {fmt}: a KVM template is one of {', '.join(TEMPLATE_FORMATS)}")
        if not iso and (hypervisor or "").upper() != "KVM":
            raise InvalidParameterValue(
                f"Invalid hypervisor {hypervisor}: templates are downloaded for KVM; use hypervisor=KVM")
        checksum = check_checksum(checksum)
        self.check_url(url, what)
        if is_featured and not self.ctx.is_root_admin:
            raise InvalidParameterValue(f"Only an administrator can register a featured {what}")
        stores = self._stores_for(zone, what)
        template = Template(
            name=name.strip(), display_text=display_text or name, format=fmt, hypervisor="KVM" if not iso else "None",
            zone_id=zone.id if zone is not None else None, account_id=owner.id, template_type="USER",
            os_type=os_type.display_name if os_type else None, os_type_id=os_type.id if os_type else None,
            is_public=bool(is_public), is_featured=bool(is_featured), is_ready=False, status=progress_status(0),
            url=url, checksum=checksum, bootable=bootable or not iso,
        )
        self.session.add(template)
        self.session.flush()
        for store in stores:
            ref = TemplateStoreRef(template_id=template.id, store_id=store.id, zone_id=store.zone_id,
                                   state=ALLOCATED, status=progress_status(0),
                                   install_path=f"{install_directory(owner.id, template.id)}/{file_name(template)}")
            self.session.add(ref)
            self.session.flush()
            self.ctx.jobs.create_system(DOWNLOAD_JOB, {"template": template.uuid, "store": store.uuid},
                                        "Template", template.uuid)
        self.ctx.event("ISO.CREATE" if iso else "TEMPLATE.CREATE",
                       f"Registered {what} {template.name} from {url}", template.uuid)
        return template

    def _stores_for(self, zone: Zone | None, what: str) -> list[ImageStore]:
        zones = [zone] if zone is not None else list(self.session.execute(
            select(Zone).where(Zone.removed.is_(None)).order_by(Zone.id)).scalars())
        stores = []
        for z in zones:
            candidates = [s for s in self.session.execute(
                select(ImageStore).where(ImageStore.removed.is_(None), ImageStore.zone_id == z.id,
                                         ImageStore.readonly.is_(False)).order_by(ImageStore.id)).scalars()
                if s.url.lower().startswith("nfs://")]
            up = [s for s in candidates if s.state == "Up"]
            if up:
                stores.append(up[0])
                continue
            if zone is None and not candidates:
                continue
            if candidates:
                # The refusal rolls the transaction back: the check is asked for now (the agent
                # channel runs it in the background), so the store is Up again once reachable.
                for store in candidates:
                    self.ctx.agents.check_image_store(store.uuid)
                down = candidates[0]
                raise ResourceUnavailable(
                    f"Failed to register {what}: the image store {down.name} ({down.url}) of zone {z.name} is "
                    f"unreachable: {down.status_message or 'not checked yet'}; it is checked again now, retry once "
                    f"it is reachable")
            raise InvalidParameterValue(
                f"Failed to register {what}: zone {z.name} has no NFS image store; add one with addImageStore")
        if not stores:
            raise InvalidParameterValue(f"Failed to register {what}: no zone has an NFS image store")
        return stores

    def check_url(self, url: str, what: str = "template") -> None:
        """Refuse URLs that are not http(s) or that lead into the cloud's own networks."""
        try:
            sites.resolve(url, self.allowed_sites(), self.management_networks())
        except sites.Refused as e:
            raise InvalidParameterValue(f"Invalid {what} URL {url}: {e}") from None

    def allowed_sites(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        text = self.ctx.settings.get(ALLOWED_SITES) or ""
        items = [part.strip() for part in text.split(",") if part.strip()]
        found = sites.networks(items)
        if len(found) < len(items):
            log.warning("ignoring entries of %s that are not CIDRs: %s", ALLOWED_SITES, text)
        return found

    def management_networks(self) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
        """(network, pod name) of every pod's management network."""
        found = []
        for gateway, netmask, name in self.session.execute(
                select(Pod.gateway, Pod.netmask, Pod.name).where(Pod.removed.is_(None))):
            try:
                found.append((ipaddress.ip_network(f"{gateway}/{netmask}", strict=False), name))
            except ValueError:
                continue
        return found

    def max_bytes(self) -> int:
        return int(self.ctx.settings.typed(MAX_SIZE)) * GiB

    # --- updateTemplate, deleteTemplate -------------------------------------------------

    def update(self, template: Template, *, name: str | None = None, display_text: str | None = None,
               os_type: GuestOs | None = None, bootable: bool | None = None, is_public: bool | None = None,
               is_featured: bool | None = None) -> Template:
        self.live(template)
        self.check_owner(template)
        if template.template_type == "BUILTIN" and not self.ctx.is_root_admin:
            raise InvalidParameterValue(f"Unable to update template {template.uuid}: it is built in")
        if name is not None:
            if not name.strip():
                raise InvalidParameterValue("the name of a template cannot be blank")
            template.name = name.strip()
        if display_text is not None:
            template.display_text = display_text
        if os_type is not None:
            template.os_type, template.os_type_id = os_type.display_name, os_type.id
        if bootable is not None:
            template.bootable = bootable
        if is_public is not None:
            template.is_public = is_public
        if is_featured is not None:
            if not self.ctx.is_root_admin:
                raise InvalidParameterValue("Only an administrator can mark a template featured")
            template.is_featured = is_featured
        self.session.flush()
        self.ctx.event("ISO.UPDATE" if template.is_iso else "TEMPLATE.UPDATE",
                       f"Updated {template.name}", template.uuid)
        return template

    def live(self, template: Template) -> Template:
        if template.removed is not None:
            raise InvalidParameterValue(f"Unable to find template by id {template.uuid}: it was deleted")
        return template

    def check_owner(self, template: Template) -> None:
        if self.ctx.is_root_admin:
            return
        if self.ctx.account is None or template.account_id != self.ctx.account.id:
            raise InvalidParameterValue(f"Account {self.ctx.account.name if self.ctx.account else ''} does not own "
                                        f"template {template.uuid}")

    def in_use(self, template: Template) -> list[str]:
        """Names of the guests not yet expunged whose root disk is made from `template`."""
        from ..persistence.models import VmInstance

        return list(self.session.execute(
            select(VmInstance.instance_name).where(VmInstance.template_id == template.id,
                                                   VmInstance.removed.is_(None)).limit(5)).scalars())

    # --- copies on stores and pools -----------------------------------------------------

    def store_refs(self, template_ids: Iterable[int]) -> dict[int, list[TemplateStoreRef]]:
        ids = list(set(template_ids))
        out: dict[int, list[TemplateStoreRef]] = {}
        if not ids:
            return out
        for ref in self.session.execute(select(TemplateStoreRef).where(
                TemplateStoreRef.template_id.in_(ids)).order_by(TemplateStoreRef.id)).scalars():
            out.setdefault(ref.template_id, []).append(ref)
        return out

    def ready_ref(self, template: Template, zone: Zone) -> TemplateStoreRef | None:
        return self.session.execute(select(TemplateStoreRef).where(
            TemplateStoreRef.template_id == template.id, TemplateStoreRef.zone_id == zone.id,
            TemplateStoreRef.state == READY)).scalars().first()

    def refresh(self, template: Template) -> None:
        """The template's own status and readiness from its copies: ready once one is."""
        refs = self.store_refs([template.id]).get(template.id, [])
        ready = [r for r in refs if r.state == READY]
        template.is_ready = bool(ready)
        if ready:
            template.status = DOWNLOAD_COMPLETE
            template.size_bytes = max(r.virtual_size for r in ready)
            template.physical_size = max(r.physical_size for r in ready)
        elif refs:
            template.status = max(refs, key=lambda r: r.updated).status

    def pool_users(self, template_id: int, pool_id: int) -> int:
        """Live volumes that are overlays on the template's copy on the pool."""
        return self.session.execute(select(func.count()).select_from(Volume).where(
            Volume.template_id == template_id, Volume.pool_id == pool_id, Volume.removed.is_(None))).scalar_one()

    def unused_copies(self, template_id: int) -> Sequence[TemplatePoolRef]:
        """The template's copies on pools that no live volume uses."""
        refs = self.session.execute(select(TemplatePoolRef).where(
            TemplatePoolRef.template_id == template_id)).scalars().all()
        return [r for r in refs if self.pool_users(template_id, r.pool_id) == 0]

    # --- listOsTypes, listOsCategories ------------------------------------------------

    def list_os_types(self, p: SimpleNamespace) -> Page:
        q = filtered(select(GuestOs).where(GuestOs.removed.is_(None)), OS_TYPE_FILTERS, p)
        return page(self.ctx, p, q, GuestOs.id)

    def list_os_categories(self, p: SimpleNamespace) -> Page:
        q = filtered(select(GuestOsCategory).where(GuestOsCategory.removed.is_(None)), OS_CATEGORY_FILTERS, p)
        return page(self.ctx, p, q, GuestOsCategory.id)

    def categories(self, rows: Iterable[GuestOs]) -> dict[int, GuestOsCategory]:
        ids = {r.category_id for r in rows}
        if not ids:
            return {}
        return {c.id: c for c in self.session.execute(
            select(GuestOsCategory).where(GuestOsCategory.id.in_(ids))).scalars()}


OS_TYPE_FILTERS = (
    Filter("id", GuestOs.id, ROW),
    Filter("oscategoryid", GuestOs.category_id, ROW),
    Filter("description", GuestOs.display_name, NOCASE),
    keyword(GuestOs.display_name),
)

OS_CATEGORY_FILTERS = (
    Filter("id", GuestOsCategory.id, ROW),
    Filter("name", GuestOsCategory.name, NOCASE),
    keyword(GuestOsCategory.name),
)
