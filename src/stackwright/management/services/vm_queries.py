"""Reads of virtual machines: listVirtualMachines and what the views of VMs refer to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..errors import PermissionDenied
from ..persistence.models import Account, AsyncJob, Host, ServiceOffering, Template, VmInstance, Zone
from .hierarchy import HYPERVISORS, choose
from .queries import NOCASE, ROW, ROWS, Filter, filtered, keyword, page, rows_by_id
from .vms import EXPUNGING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import SimpleNamespace

    from sqlalchemy import Select

    from ..context import Context
    from .queries import Page

VM_FILTERS = (
    Filter("id", VmInstance.id, ROW),
    Filter("ids", VmInstance.id, ROWS),
    Filter("name", VmInstance.name, NOCASE),
    Filter("state", VmInstance.state, NOCASE),
    Filter("zoneid", VmInstance.zone_id, ROW),
    Filter("hostid", VmInstance.host_id, ROW),
    Filter("templateid", VmInstance.template_id, ROW),
    Filter("serviceofferingid", VmInstance.service_offering_id, ROW),
    keyword(VmInstance.name, VmInstance.display_name, VmInstance.instance_name),
)


class VmView:
    """What the views of a page of VMs refer to, read once for the page."""

    def __init__(self, zones: dict[int, Zone], hosts: dict[int, Host], templates: dict[int, Template],
                 offerings: dict[int, ServiceOffering], accounts: dict[int, Account],
                 pending: dict[str, str]) -> None:
        self.zones, self.hosts, self.templates = zones, hosts, templates
        self.offerings, self.accounts, self.pending = offerings, accounts, pending


class VmQueries:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def list_page(self, p: SimpleNamespace, given_haenable: bool) -> Page:
        """The page of VMs listVirtualMachines `p` asks for; `given_haenable`: whether `haenable`
        was passed (false is a value)."""
        q = filtered(select(VmInstance).where(VmInstance.removed.is_(None), VmInstance.state != EXPUNGING),
                     VM_FILTERS, p)
        if p.podid is not None or p.clusterid is not None:
            hosts = select(Host.id)
            hosts = hosts.where(Host.pod_id == p.podid.id) if p.podid is not None else hosts
            hosts = hosts.where(Host.cluster_id == p.clusterid.id) if p.clusterid is not None else hosts
            q = q.where(VmInstance.host_id.in_(hosts))
        if p.hypervisor:
            q = q.where(VmInstance.hypervisor == choose(
                p.hypervisor, HYPERVISORS, f"Invalid hypervisor type {p.hypervisor}; use {' or '.join(HYPERVISORS)}"))
        if given_haenable:
            q = q.where(VmInstance.ha_enabled.is_(p.haenable))
        return page(self.ctx, p, self._owned(p, q), VmInstance.id)

    def _owned(self, p: SimpleNamespace, q: Select[tuple[VmInstance]]) -> Select[tuple[VmInstance]]:
        """Whose VMs: an account named (admins), everything (admins with listall), else the caller's."""
        ctx = self.ctx
        admin = ctx.is_root_admin
        if p.account:
            domain_id = p.domainid.id if p.domainid is not None else ctx.account.domain_id
            account_ids = select(Account.id).where(func.lower(Account.name) == p.account.lower(),
                                                   Account.domain_id == domain_id)
            if not admin and p.account.lower() != ctx.account.name.lower():
                raise PermissionDenied(f"Account {ctx.account.name} does not have permission to list the VMs "
                                       f"of account {p.account}")
            return q.where(VmInstance.account_id.in_(account_ids))
        if admin and p.domainid is not None:
            return q.where(VmInstance.domain_id == p.domainid.id)
        if admin and (p.listall or p.id is not None or p.ids):
            return q
        return q.where(VmInstance.account_id == ctx.account.id)

    def view_context(self, vms: Sequence[VmInstance]) -> VmView:
        """The VmView of `vms`: their zones, hosts, templates, offerings, accounts and pending jobs."""
        session = self.session
        jobs = select(AsyncJob.instance_uuid, AsyncJob.uuid).where(
            AsyncJob.instance_uuid.in_([v.uuid for v in vms]), AsyncJob.status == 0)
        if self.ctx.job is not None:
            # A job's own result does not show the job as pending.
            jobs = jobs.where(AsyncJob.id != self.ctx.job.id)
        return VmView(
            rows_by_id(session, Zone, (v.zone_id for v in vms)),
            rows_by_id(session, Host, (v.host_id for v in vms)),
            rows_by_id(session, Template, (v.template_id for v in vms)),
            rows_by_id(session, ServiceOffering, (v.service_offering_id for v in vms)),
            rows_by_id(session, Account, (v.account_id for v in vms)),
            dict(session.execute(jobs).all()),
        )

    def zone_of(self, vm: VmInstance) -> Zone | None:
        return self.session.get(Zone, vm.zone_id)
