"""Templates: listTemplates.

A template available in every zone (the built-in ones) is shown with the zone asked for
(`zoneid`), else once, without a zone, marked `crossZones`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Param, String, Uuid
from ..api.registry import api_command
from ..formatting import compact, date
from ..persistence.models import Domain, Template, Zone
from ..services.hierarchy import HYPERVISORS, choose

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context
    from ..persistence.models import Account

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
                  domain: Domain | None = None) -> dict[str, Any]:
    return compact({
        "id": template.uuid,
        "name": template.name,
        "displaytext": template.display_text,
        "isready": template.is_ready,
        "status": template.status,
        "format": template.format,
        "hypervisor": template.hypervisor,
        "ostypename": template.os_type,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "ispublic": template.is_public,
        "isfeatured": template.is_featured,
        "templatetype": template.template_type,
        "size": template.size_bytes,
        "physicalsize": template.size_bytes,
        "crossZones": template.zone_id is None,
        "account": account.name if account else "system",
        "domainid": domain.uuid if domain else None,
        "domain": domain.name if domain else None,
        "checksum": template.checksum,
        "passwordenabled": False,
        "sshkeyenabled": False,
        "isextractable": False,
        "bootable": True,
        "requireshvm": True,
        "isdynamicallyscalable": False,
        "directdownload": False,
        "deployasis": False,
        "tags": [],
        "created": date(template.created),
    })


@api_command(
    "listTemplates", response="template", admin_only=False, fields=TEMPLATE_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.template.ListTemplatesCmd", params=[
        Param("templatefilter", String(), required=True,
              description="possible values are featured, self, selfexecutable, sharedexecutable, executable, community, all"),
        Param("id", Uuid(Template), description="the template ID"),
        Param("name", String(), description="the template name"),
        Param("zoneid", Uuid(Zone), description="list templates by zoneId"),
        Param("hypervisor", String(), description="the hypervisor for which to restrict the search"),
        Param("account", String(), description="list resources by account. Must be used with the domainId parameter."),
        Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
    ])
def list_templates(ctx: Context, p: SimpleNamespace) -> ListResult:
    """List all public, private, and privileged templates."""
    hypervisor = choose(p.hypervisor, HYPERVISORS,
                        f"Invalid hypervisor type {p.hypervisor}; use {' or '.join(HYPERVISORS)}") if p.hypervisor else None

    def render_many(templates: list[Template]) -> list[dict[str, Any]]:
        zones, accounts = ctx.catalog.template_view_context(templates)
        root = ctx.accounts.root_domain()
        out = []
        for t in templates:
            account = accounts.get(t.account_id)
            zone = zones.get(t.zone_id) if t.zone_id is not None else p.zoneid
            out.append(template_view(t, zone, account, account.domain if account else root))
        return out

    return listed(ctx.catalog.list_templates(p, hypervisor), render_many=render_many)
