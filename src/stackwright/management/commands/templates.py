"""Templates and ISOs: registerTemplate, listTemplates, updateTemplate, deleteTemplate,
registerIso, listIsos, updateIso, deleteIso; the OS catalogue: listOsTypes, listOsCategories.

A built-in template (available in every zone) is shown with the zone asked for (`zoneid`),
else once, without a zone, marked `crossZones`. A registered template is shown once per
zone it is downloaded to, with that copy's `status` (`NN% Downloaded`, `Download Complete`,
or why it failed) and `isready`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Param, String, Uuid
from ..api.registry import Success, api_command
from ..errors import InvalidParameterValue
from ..formatting import compact, date
from ..persistence.models import Domain, GuestOs, GuestOsCategory, Template, Zone
from ..services import template_jobs
from ..services.hierarchy import HYPERVISORS, choose
from ..services.steps import DbStep
from ..services.templates import ISO_FORMAT, READY

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context
    from ..persistence.models import Account, TemplateStoreRef
    from ..services.steps import Steps

TEMPLATE_FIELDS = (
    ("id", "the template ID"), ("name", "the template name"), ("displaytext", "the template display text"),
    ("isready", "true if the template is ready to be deployed from, false otherwise.", "boolean"),
    ("status", "the status of the template"), ("format", "the format of the template."),
    ("hypervisor", "the hypervisor on which the template runs"), ("ostypename", "the name of the OS type"),
    ("zoneid", "the ID of the zone for this template"), ("zonename", "the name of the zone for this template"),
    ("ispublic", "true if this template is a public template, false otherwise", "boolean"),
    ("isfeatured", "true if this template is a featured template, false otherwise", "boolean"),
    ("templatetype", "the type of the template"), ("size", "the size of the template", "long"),
    ("crossZones", "true if the template is managed across all Zones, false otherwise", "boolean"),
    ("created", "the date this template was created", "date"),
)


def template_view(template: Template, zone: Zone | None = None, account: Account | None = None,
                  domain: Domain | None = None, ref: TemplateStoreRef | None = None,
                  os_type: GuestOs | None = None) -> dict[str, Any]:
    return compact({
        "id": template.uuid,
        "name": template.name,
        "displaytext": template.display_text,
        "isready": ref.state == READY if ref is not None else template.is_ready,
        "status": ref.status if ref is not None else template.status,
        "format": template.format,
        "hypervisor": template.hypervisor,
        "ostypeid": os_type.uuid if os_type else None,
        "ostypename": template.os_type,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "ispublic": template.is_public,
        "isfeatured": template.is_featured,
        "templatetype": template.template_type,
        "size": (ref.virtual_size or None) if ref is not None else template.size_bytes,
        "physicalsize": (ref.physical_size or None) if ref is not None else template.physical_size or template.size_bytes,
        "crossZones": template.zone_id is None,
        "account": account.name if account else "system",
        "domainid": domain.uuid if domain else None,
        "domain": domain.name if domain else None,
        "checksum": template.checksum,
        "passwordenabled": False,
        "sshkeyenabled": False,
        "isextractable": False,
        "bootable": template.bootable,
        "requireshvm": True,
        "isdynamicallyscalable": False,
        "directdownload": False,
        "deployasis": False,
        "tags": [],
        "created": date(template.created),
    })


LIST_PARAMS = [
    Param("name", String(), description="the template name"),
    Param("zoneid", Uuid(Zone), description="list templates by zoneId"),
    Param("hypervisor", String(), description="the hypervisor for which to restrict the search"),
    Param("account", String(), description="list resources by account. Must be used with the domainId parameter."),
    Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
]


def _listed(ctx: Context, p: SimpleNamespace, template_filter: str, iso: bool) -> ListResult:
    hypervisor = choose(p.hypervisor, HYPERVISORS,
                        f"Invalid hypervisor type {p.hypervisor}; use {' or '.join(HYPERVISORS)}") if p.hypervisor else None

    def render_many(templates: list[Template]) -> list[dict[str, Any]]:
        zones, accounts = ctx.catalog.template_view_context(templates)
        refs = ctx.templates.store_refs(t.id for t in templates)
        zones.update(ctx.catalog.zones_by_id(r.zone_id for rs in refs.values() for r in rs))
        os_types = ctx.catalog.os_types_by_id(t.os_type_id for t in templates)
        root = ctx.accounts.root_domain()
        out = []
        for t in templates:
            account = accounts.get(t.account_id)
            domain = account.domain if account else root
            os_type = os_types.get(t.os_type_id) if t.os_type_id else None
            copies = [r for r in refs.get(t.id, []) if p.zoneid is None or r.zone_id == p.zoneid.id]
            if copies:
                out.extend(template_view(t, zones.get(r.zone_id), account, domain, r, os_type) for r in copies)
                continue
            zone = zones.get(t.zone_id) if t.zone_id is not None else p.zoneid
            out.append(template_view(t, zone, account, domain, None, os_type))
        return out

    return listed(ctx.catalog.list_templates(p, hypervisor, template_filter=template_filter, iso=iso),
                  render_many=render_many)


@api_command(
    "listTemplates", response="template", admin_only=False, fields=TEMPLATE_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.template.ListTemplatesCmd", params=[
        Param("templatefilter", String(), required=True,
              description="possible values are featured, self, selfexecutable, sharedexecutable, executable, community, all"),
        Param("id", Uuid(Template), description="the template ID"),
        *LIST_PARAMS,
    ])
def list_templates(ctx: Context, p: SimpleNamespace) -> ListResult:
    """List all public, private, and privileged templates."""
    return _listed(ctx, p, p.templatefilter, iso=False)


@api_command(
    "listIsos", response="iso", admin_only=False, fields=TEMPLATE_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.iso.ListIsosCmd", params=[
        Param("isofilter", String(), default="self",
              description="possible values are featured, self, selfexecutable, sharedexecutable, executable, community, all"),
        Param("id", Uuid(Template), description="list ISO by ID"),
        Param("bootable", Boolean(), description="true if the ISO is bootable, false otherwise"),
        Param("ispublic", Boolean(), description="true if the ISO is publicly available to all users, false otherwise."),
        Param("isready", Boolean(), description="true if this ISO is ready to be deployed"),
        *LIST_PARAMS,
    ])
def list_isos(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all available ISO files."""
    return _listed(ctx, p, p.isofilter, iso=True)


REGISTER_PARAMS = [
    Param("name", String(), required=True, description="the name of the template"),
    Param("displaytext", String(4096), description="the display text of the template, defaults to the name"),
    Param("url", String(2048), required=True,
          description="the URL of where the template is hosted. Possible URL include http:// and https://"),
    Param("ostypeid", Uuid(GuestOs), description="the ID of the OS Type that best represents the OS of this template"),
    Param("zoneid", String(), required=True,
          description="the ID of the zone the template is to be hosted on; -1 for all zones"),
    Param("ispublic", Boolean(), description="true if the template is available to all accounts; default is true for "
                                             "admins and false for other users"),
    Param("isfeatured", Boolean(), description="true if this template is a featured template, false otherwise"),
    Param("checksum", String(), description="the checksum value of this template: an MD5 digest, or "
                                            "{SHA-256} (or another algorithm) followed by the digest"),
]


def _zone(ctx: Context, value: str) -> Zone | None:
    """`zoneid`: a zone's id, or -1 for every zone."""
    if value == "-1":
        return None
    from sqlalchemy.exc import NoResultFound

    from ..services.queries import by_uuid

    try:
        return by_uuid(ctx.session, Zone, value)
    except (InvalidParameterValue, NoResultFound):
        raise InvalidParameterValue(f"Unable to execute API command due to invalid value. Invalid parameter zoneid "
                                    f"value={value}: give the id of a zone, or -1 for every zone") from None


def _register(ctx: Context, p: SimpleNamespace, fmt: str, hypervisor: str | None, bootable: bool = True,
              os_type: GuestOs | None = None) -> Template:
    if os_type is None:
        raise InvalidParameterValue("Please specify a valid ostypeid (listOsTypes lists them)")
    owner = ctx.account
    is_public = p.ispublic if p.ispublic is not None else ctx.is_root_admin
    template = ctx.templates.register(
        name=p.name, display_text=p.displaytext, url=p.url, fmt=fmt, hypervisor=hypervisor, os_type=os_type,
        zone=_zone(ctx, p.zoneid), owner=owner, is_public=is_public, is_featured=bool(p.isfeatured),
        checksum=p.checksum, bootable=bootable)
    ctx.session.flush()
    return template


def _views(ctx: Context, template: Template) -> list[dict[str, Any]]:
    refs = ctx.templates.store_refs([template.id]).get(template.id, [])
    zones = ctx.catalog.zones_by_id(r.zone_id for r in refs)
    os_type = ctx.session.get(GuestOs, template.os_type_id) if template.os_type_id else None
    account = ctx.account
    return [template_view(template, zones.get(r.zone_id), account, account.domain, r, os_type) for r in refs]


@api_command(
    "registerTemplate", response="template", returns_list=True, admin_only=False, fields=TEMPLATE_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.template.RegisterTemplateCmd", params=[
        *REGISTER_PARAMS,
        Param("format", String(), required=True, description="the format for the template. Possible values include QCOW2 and RAW"),
        Param("hypervisor", String(), required=True, description="the target hypervisor for the template (KVM)"),
        Param("requireshvm", Boolean(), description="true if this template requires HVM"),
        Param("passwordenabled", Boolean(), description="true if the template supports the password reset feature"),
    ])
def register_template(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Registers an existing template into the CloudStack cloud."""
    from ..api.registry import ListResult

    template = _register(ctx, p, (p.format or "").upper(), p.hypervisor, os_type=p.ostypeid)
    views = _views(ctx, template)
    return ListResult(views, len(views))


@api_command(
    "registerIso", response="iso", returns_list=True, admin_only=False, fields=TEMPLATE_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.iso.RegisterIsoCmd", params=[
        *REGISTER_PARAMS,
        Param("bootable", Boolean(), default=True, description="true if this ISO is bootable. If not passed explicitly its assumed to be true"),
    ])
def register_iso(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Registers an existing ISO into the CloudStack Cloud."""
    from ..api.registry import ListResult
    from ..services import guest_os

    os_type = p.ostypeid or (None if p.bootable else guest_os.by_name(ctx.session, "Other (64-bit)"))
    template = _register(ctx, p, ISO_FORMAT, None, bootable=p.bootable, os_type=os_type)
    views = _views(ctx, template)
    return ListResult(views, len(views))


UPDATE_PARAMS = [
    Param("name", String(), description="the name of the image file"),
    Param("displaytext", String(4096), description="the display text of the image"),
    Param("ostypeid", Uuid(GuestOs), description="the ID of the OS type that best represents the OS of this image."),
    Param("bootable", Boolean(), description="true if image is bootable, false otherwise"),
    Param("ispublic", Boolean(), description="true if the image is available to all accounts"),
    Param("isfeatured", Boolean(), description="true if the image is featured"),
]


def _update(ctx: Context, p: SimpleNamespace, iso: bool) -> dict[str, Any]:
    template = _own(ctx, p.id, iso)
    ctx.templates.update(template, name=p.name, display_text=p.displaytext, os_type=p.ostypeid,
                         bootable=p.bootable, is_public=p.ispublic, is_featured=p.isfeatured)
    views = _views(ctx, template)
    if views:
        return views[0]
    os_type = ctx.session.get(GuestOs, template.os_type_id) if template.os_type_id else None
    return template_view(template, None, None, ctx.accounts.root_domain(), None, os_type)


def _own(ctx: Context, template: Template, iso: bool) -> Template:
    if template.is_iso != iso:
        raise InvalidParameterValue(f"{template.uuid} is {'an ISO' if template.is_iso else 'a template'}; use the "
                                    f"{'ISO' if template.is_iso else 'template'} commands for it")
    ctx.templates.live(template)
    ctx.templates.check_owner(template)
    return template


@api_command("updateTemplate", response="template", admin_only=False, fields=TEMPLATE_FIELDS,
             cmd_class="org.apache.cloudstack.api.command.user.template.UpdateTemplateCmd", params=[
                 Param("id", Uuid(Template), required=True, description="the ID of the image file"), *UPDATE_PARAMS])
def update_template(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates attributes of a template."""
    return _update(ctx, p, iso=False)


@api_command("updateIso", response="iso", admin_only=False, fields=TEMPLATE_FIELDS,
             cmd_class="org.apache.cloudstack.api.command.user.iso.UpdateIsoCmd", params=[
                 Param("id", Uuid(Template), required=True, description="the ID of the image file"), *UPDATE_PARAMS])
def update_iso(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates an ISO file."""
    return _update(ctx, p, iso=True)


def _delete(ctx: Context, p: SimpleNamespace, iso: bool) -> Steps:
    template = _own(ctx, p.id, iso)
    if template.template_type == "BUILTIN":
        raise InvalidParameterValue(f"Unable to delete {template.name}: it is built in")
    yield from template_jobs.delete_template(template.id)
    return (yield DbStep(_success))


def _success(ctx: Context) -> Success:
    return Success()


@api_command("deleteTemplate", async_job=True, instance_type="Template", admin_only=False,
             cmd_class="org.apache.cloudstack.api.command.user.template.DeleteTemplateCmd", params=[
                 Param("id", Uuid(Template), required=True, description="the ID of the template"),
                 Param("zoneid", Uuid(Zone), description="the ID of zone of the template (ignored: a template is "
                                                         "deleted from every zone)"),
                 Param("forced", Boolean(), description="Force delete a template (guests made from it keep their "
                                                        "disks either way)"),
             ])
def delete_template(ctx: Context, p: SimpleNamespace) -> Steps:
    """Deletes a template from the system. All virtual machines using the deleted template will not be affected."""
    return (yield from _delete(ctx, p, iso=False))


@api_command("deleteIso", async_job=True, instance_type="Iso", admin_only=False,
             cmd_class="org.apache.cloudstack.api.command.user.iso.DeleteIsoCmd", params=[
                 Param("id", Uuid(Template), required=True, description="the ID of the ISO file"),
                 Param("zoneid", Uuid(Zone), description="the ID of the zone of the ISO (ignored: an ISO is deleted "
                                                         "from every zone)"),
             ])
def delete_iso(ctx: Context, p: SimpleNamespace) -> Steps:
    """Deletes an ISO file."""
    return (yield from _delete(ctx, p, iso=True))


# --- the OS catalogue -------------------------------------------------------------------------


@api_command("listOsTypes", response="ostype", admin_only=False, cacheable=True,
             cmd_class="org.apache.cloudstack.api.command.user.guest.ListGuestOsCmd", fields=(
                 ("id", "the ID of the OS type"), ("description", "the name/description of the OS type"),
                 ("oscategoryid", "the ID of the OS category"), ("oscategoryname", "the name of the OS category"),
                 ("isuserdefined", "is the guest OS user defined", "boolean"),
             ), params=[
                 Param("id", Uuid(GuestOs), description="list by Os type Id"),
                 Param("oscategoryid", Uuid(GuestOsCategory), description="list by Os Category id"),
                 Param("description", String(), description="list os by description"),
             ])
def list_os_types(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all supported OS types for this cloud."""
    def render_many(rows: list[GuestOs]) -> list[dict[str, Any]]:
        categories = ctx.templates.categories(rows)
        return [{"id": r.uuid, "description": r.display_name, "name": r.display_name,
                 "oscategoryid": categories[r.category_id].uuid, "oscategoryname": categories[r.category_id].name,
                 "isuserdefined": r.is_user_defined} for r in rows]

    return listed(ctx.templates.list_os_types(p), render_many=render_many)


@api_command("listOsCategories", response="oscategory", admin_only=False, cacheable=True,
             cmd_class="org.apache.cloudstack.api.command.user.guest.ListGuestOsCategoriesCmd", fields=(
                 ("id", "the ID of the OS category"), ("name", "the name of the OS category"),
             ), params=[
                 Param("id", Uuid(GuestOsCategory), description="list Os category by id"),
                 Param("name", String(), description="list os category by name"),
             ])
def list_os_categories(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all supported OS categories for this cloud."""
    return listed(ctx.templates.list_os_categories(p), lambda c: {"id": c.uuid, "name": c.name})
