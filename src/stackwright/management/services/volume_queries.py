"""Reads of volumes: listVolumes, and what the views of volumes refer to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..errors import PermissionDenied
from ..persistence.models import (
    Account,
    DiskOffering,
    ServiceOffering,
    StoragePool,
    VmInstance,
    Volume,
    Zone,
)
from .queries import NOCASE, ROW, ROWS, Filter, filtered, keyword, page, rows_by_id

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import SimpleNamespace

    from sqlalchemy import Select

    from ..context import Context
    from .queries import Page

VOLUME_FILTERS = (
    Filter("id", Volume.id, ROW),
    Filter("ids", Volume.id, ROWS),
    Filter("name", Volume.name, NOCASE),
    Filter("type", Volume.volume_type, NOCASE),
    Filter("state", Volume.state, NOCASE),
    Filter("zoneid", Volume.zone_id, ROW),
    Filter("virtualmachineid", Volume.vm_id, ROW),
    Filter("storageid", Volume.pool_id, ROW),
    Filter("diskofferingid", Volume.disk_offering_id, ROW),
    keyword(Volume.name),
)


class VolumeView:
    """What the views of a page of volumes refer to, read once for the page."""

    def __init__(self, zones: dict[int, Zone], vms: dict[int, VmInstance], pools: dict[int, StoragePool],
                 disk_offerings: dict[int, DiskOffering], service_offerings: dict[int, ServiceOffering],
                 accounts: dict[int, Account]) -> None:
        self.zones, self.vms, self.pools = zones, vms, pools
        self.disk_offerings, self.service_offerings, self.accounts = disk_offerings, service_offerings, accounts


class VolumeQueries:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def list_page(self, p: SimpleNamespace) -> Page:
        """The page of live volumes listVolumes `p` asks for."""
        q = filtered(select(Volume).where(Volume.removed.is_(None)), VOLUME_FILTERS, p)
        if p.podid is not None or p.clusterid is not None:
            pools = select(StoragePool.id)
            pools = pools.where(StoragePool.pod_id == p.podid.id) if p.podid is not None else pools
            pools = pools.where(StoragePool.cluster_id == p.clusterid.id) if p.clusterid is not None else pools
            q = q.where(Volume.pool_id.in_(pools))
        if p.hostid is not None:
            q = q.where(Volume.vm_id.in_(select(VmInstance.id).where(VmInstance.host_id == p.hostid.id)))
        return page(self.ctx, p, self._owned(p, q), Volume.id)

    def _owned(self, p: SimpleNamespace, q: Select[tuple[Volume]]) -> Select[tuple[Volume]]:
        """Whose volumes: an account named (admins), everything (admins with listall or an id),
        else the caller's."""
        ctx = self.ctx
        admin = ctx.is_root_admin
        if p.account:
            domain_id = p.domainid.id if p.domainid is not None else ctx.account.domain_id
            if not admin and p.account.lower() != ctx.account.name.lower():
                raise PermissionDenied(f"Account {ctx.account.name} does not have permission to list the volumes "
                                       f"of account {p.account}")
            return q.where(Volume.account_id.in_(select(Account.id).where(
                func.lower(Account.name) == p.account.lower(), Account.domain_id == domain_id)))
        if admin and p.domainid is not None:
            return q.where(Volume.account_id.in_(select(Account.id).where(Account.domain_id == p.domainid.id)))
        if admin and (p.listall or p.id is not None or p.ids):
            return q
        return q.where(Volume.account_id == ctx.account.id)

    def view_context(self, volumes: Sequence[Volume]) -> VolumeView:
        session = self.session
        vms = rows_by_id(session, VmInstance, (v.vm_id for v in volumes))
        return VolumeView(
            rows_by_id(session, Zone, (v.zone_id for v in volumes)),
            vms,
            rows_by_id(session, StoragePool, (v.pool_id for v in volumes)),
            rows_by_id(session, DiskOffering, (v.disk_offering_id for v in volumes)),
            rows_by_id(session, ServiceOffering, (vm.service_offering_id for vm in vms.values())),
            rows_by_id(session, Account, (v.account_id for v in volumes)),
        )
