"""Resource limits and counts per account and domain, as CloudStack keeps them.

Each of CloudStack's resource types (0 instances ... 11 secondary storage) has, for every
account and every domain, a limit and a count. A limit is the row set by updateResourceLimit,
else the max.account.* / max.domain.* setting; -1 means none. Root admin accounts and the ROOT
domain are never limited. A domain's count is what its accounts and subdomains use together,
so a domain's limit bounds all its accounts at once.

Counts change in the transaction that changes the resource (a guest deployed, destroyed or
expunged), for the owning account and each of its domains up to ROOT; updateResourceCount
recounts them from the stored resources. A request over a limit is refused before anything
is created, with CloudStack's ResourceAllocationException (535).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..errors import InvalidParameterValue, PermissionDenied, ResourceAllocationError
from ..persistence.models import (
    Account,
    Domain,
    ResourceCount,
    ResourceLimit,
    Template,
    VmInstance,
    Volume,
)
from .accounts import ROOT_ADMIN
from .configuration import key

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

    from ..context import Context

GiB = 1024 ** 3


@dataclass(frozen=True)
class ResourceType:
    number: int
    name: str               # CloudStack's ResourceType name, shown as resourcetypename
    setting: str            # the part after max.account. / max.domain.
    unit: int = 1           # a limit counts this many of what the count counts (GiB of bytes)


RESOURCE_TYPES = (
    ResourceType(0, "user_vm", "user.vms"),
    ResourceType(1, "public_ip", "public.ips"),
    ResourceType(2, "volume", "volumes"),
    ResourceType(3, "snapshot", "snapshots"),
    ResourceType(4, "template", "templates"),
    ResourceType(5, "project", "projects"),
    ResourceType(6, "network", "networks"),
    ResourceType(7, "vpc", "vpcs"),
    ResourceType(8, "cpu", "cpus"),
    ResourceType(9, "memory", "memory"),
    ResourceType(10, "primary_storage", "primary.storage", GiB),
    ResourceType(11, "secondary_storage", "secondary.storage", GiB),
)
BY_NUMBER = {t.number: t for t in RESOURCE_TYPES}
BY_NAME = {t.name: t for t in RESOURCE_TYPES}
USER_VM, VOLUME, CPU, MEMORY, PRIMARY_STORAGE = (BY_NUMBER[n] for n in (0, 2, 8, 9, 10))
UNLIMITED = -1
# Guests in these states no longer count (CloudStack counts allocated guests).
NOT_COUNTED = ("Destroyed", "Expunging")


def resource_type(number: int | None = None, name: str | None = None) -> ResourceType:
    """The type named by number or by name; a clear error for anything else."""
    if number is not None:
        if number not in BY_NUMBER:
            raise InvalidParameterValue(
                f"Please specify a valid resource type: {number} is not one of "
                f"{', '.join(f'{t.number} ({t.name})' for t in RESOURCE_TYPES)}")
        found = BY_NUMBER[number]
        if name is not None and name.lower() != found.name:
            raise InvalidParameterValue(f"Resource type {number} is {found.name}, not {name}")
        return found
    if name is not None:
        if name.lower() not in BY_NAME:
            raise InvalidParameterValue(
                f"Please specify a valid resource type name: {name} is not one of {', '.join(BY_NAME)}")
        return BY_NAME[name.lower()]
    raise InvalidParameterValue("Please specify a resource type (resourcetype or resourcetypename)")


def vm_usage(cpu: int, memory_mb: int, *volume_bytes: int) -> dict[ResourceType, int]:
    """What one guest with its volumes (root first, then data) counts, per type."""
    return {USER_VM: 1, CPU: cpu, MEMORY: memory_mb, VOLUME: len(volume_bytes), PRIMARY_STORAGE: sum(volume_bytes)}


class ResourceLimitService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session: Session = ctx.session

    # --- reads -------------------------------------------------------------------------

    def domains_up(self, domain: Domain) -> list[Domain]:
        """`domain` and its parents, nearest first, ROOT last."""
        chain = [domain]
        while chain[-1].parent_id is not None:
            chain.append(self.session.get(Domain, chain[-1].parent_id))
        return chain

    def _limit_row(self, rtype: ResourceType, account: Account | None = None,
                   domain: Domain | None = None) -> ResourceLimit | None:
        owner = (ResourceLimit.account_id == account.id) if account is not None else (
            (ResourceLimit.domain_id == domain.id) & ResourceLimit.account_id.is_(None))
        return self.session.execute(
            select(ResourceLimit).where(owner, ResourceLimit.type == rtype.number)).scalars().first()

    def account_limit(self, account: Account, rtype: ResourceType) -> int:
        """The account's limit in the type's unit: its own row, else max.account.*; root admins: -1."""
        if account.account_type == ROOT_ADMIN:
            return UNLIMITED
        row = self._limit_row(rtype, account=account)
        if row is not None:
            return row.max
        return self._default(f"max.account.{rtype.setting}")

    def domain_limit(self, domain: Domain, rtype: ResourceType) -> int:
        """The domain's limit in the type's unit: its own row, else max.domain.*; ROOT: -1."""
        if domain.parent_id is None:
            return UNLIMITED
        row = self._limit_row(rtype, domain=domain)
        if row is not None:
            return row.max
        return self._default(f"max.domain.{rtype.setting}")

    def _default(self, name: str) -> int:
        """A max.* setting as this transaction sees it (a change made in it counts at once)."""
        return int(key(name).typed(self.ctx.settings.global_value(name)))

    def _count_row(self, rtype: ResourceType, account: Account | None = None, domain: Domain | None = None,
                   lock: bool = False) -> ResourceCount | None:
        owner = (ResourceCount.account_id == account.id) if account is not None else (
            (ResourceCount.domain_id == domain.id) & ResourceCount.account_id.is_(None))
        q = select(ResourceCount).where(owner, ResourceCount.type == rtype.number)
        if lock:
            q = q.with_for_update()
        return self.session.execute(q).scalars().first()

    def count(self, rtype: ResourceType, account: Account | None = None, domain: Domain | None = None) -> int:
        row = self._count_row(rtype, account, domain)
        return row.count if row is not None else 0

    # --- checks and changes ------------------------------------------------------------

    def check(self, account: Account, wanted: dict[ResourceType, int]) -> None:
        """Refuse (535) when adding `wanted` would take the account or one of its domains past a limit."""
        for rtype, amount in wanted.items():
            if amount <= 0:
                continue
            limit = self.account_limit(account, rtype)
            current = self.count(rtype, account=account) if limit != UNLIMITED else 0
            if limit != UNLIMITED and current + amount > limit * rtype.unit:
                raise ResourceAllocationError(
                    f"Maximum amount of resources of Type = '{rtype.name}' for {account.name} in Domain Id = "
                    f"{account.domain.uuid} is exceeded: Account Resource Limit = {self._shown(rtype, limit * rtype.unit)}, "
                    f"Current Account Resource Amount = {self._shown(rtype, current)}, "
                    f"Requested Resource Amount = {self._shown(rtype, amount)}.")
            if account.account_type == ROOT_ADMIN:
                continue
            for domain in self.domains_up(account.domain):
                limit = self.domain_limit(domain, rtype)
                current = self.count(rtype, domain=domain) if limit != UNLIMITED else 0
                if limit != UNLIMITED and current + amount > limit * rtype.unit:
                    raise ResourceAllocationError(
                        f"Maximum domain resource limits of Type '{rtype.name}' for Domain Id = {domain.uuid} is "
                        f"exceeded: Domain Resource Limit = {self._shown(rtype, limit * rtype.unit)}, "
                        f"Current Domain Resource Amount = {self._shown(rtype, current)}, "
                        f"Requested Resource Amount = {self._shown(rtype, amount)}.")

    @staticmethod
    def _shown(rtype: ResourceType, amount: int) -> str:
        if rtype.unit == GiB:
            return f"{amount / GiB:.2f} GB"
        return str(amount)

    def change(self, account: Account, deltas: dict[ResourceType, int]) -> None:
        """Add `deltas` (negative: remove) to the counts of the account and each of its domains."""
        changed = {rtype: delta for rtype, delta in deltas.items() if delta != 0}
        if not changed:
            return
        owners = [(account, None)] + [(None, d) for d in self.domains_up(account.domain)]
        # Every row to change, locked, in one query: a deployment changes five types for the
        # account and each of its domains.
        found: dict[tuple[int, int | None, int | None], ResourceCount] = {}
        for row in self.session.execute(select(ResourceCount).where(
                ResourceCount.type.in_([rtype.number for rtype in changed]),
                (ResourceCount.account_id == account.id) | (
                    ResourceCount.account_id.is_(None)
                    & ResourceCount.domain_id.in_([d.id for _a, d in owners[1:]]))).with_for_update()).scalars():
            found.setdefault((row.type, row.account_id, None if row.account_id is not None else row.domain_id), row)
        for rtype, delta in changed.items():
            for owner_account, owner_domain in owners:
                row = found.get((rtype.number, owner_account.id if owner_account else None,
                                 owner_domain.id if owner_domain else None))
                if row is None:
                    row = ResourceCount(type=rtype.number, count=0,
                                        account_id=owner_account.id if owner_account else None,
                                        domain_id=owner_domain.id if owner_domain else None)
                    self.session.add(row)
                row.count = max(0, (row.count or 0) + delta)
        self.session.flush()

    def set_limit(self, rtype: ResourceType, maximum: int | None, account: Account | None = None,
                  domain: Domain | None = None) -> int:
        """updateResourceLimit: the new limit of the account, or else of the domain."""
        value = UNLIMITED if maximum is None else maximum
        if value < UNLIMITED:
            raise InvalidParameterValue(
                "Please specify either '-1' for an infinite limit, or a limit that is at least '0'.")
        if account is not None:
            if account.account_type == ROOT_ADMIN:
                raise InvalidParameterValue(
                    f"Unable to update the resource limit of account {account.name}: root admin accounts have no limits")
            parent = account.domain
            usage = self.count(rtype, account=account)
            owner_text = f"account {account.name}"
        else:
            if domain.parent_id is None:
                raise PermissionDenied(f"Cannot update resource limit for ROOT domain {domain.uuid}, permission denied")
            parent = self.session.get(Domain, domain.parent_id)
            usage = self.count(rtype, domain=domain)
            owner_text = f"domain {domain.name}"
        parent_limit = self.domain_limit(parent, rtype)
        if value != UNLIMITED and parent_limit != UNLIMITED and value > parent_limit:
            raise InvalidParameterValue(
                f"Domain {parent.name} (id: {parent.uuid}) has maximum allowed resource limit {parent_limit} for "
                f"{rtype.name}, please specify a value less than or equal to {parent_limit}")
        if value != UNLIMITED and usage > value * rtype.unit:
            raise InvalidParameterValue(
                f"Resource limit {value} for {rtype.name} of {owner_text} is below its current usage of "
                f"{self._shown(rtype, usage) if rtype.unit != 1 else usage}; release resources first or set a "
                f"limit of at least {-(-usage // rtype.unit)}")
        row = self._limit_row(rtype, account=account, domain=domain)
        if row is None:
            row = ResourceLimit(type=rtype.number, max=value, account_id=account.id if account else None,
                                domain_id=None if account else domain.id)
            self.session.add(row)
        else:
            row.max = value
        self.session.flush()
        return value

    # --- recount -----------------------------------------------------------------------

    def actual(self, rtype: ResourceType, account_ids: Iterable[int]) -> int:
        """What the accounts `account_ids` use of `rtype`, from the stored resources."""
        ids = list(account_ids)
        if not ids:
            return 0
        vms = select(VmInstance).where(VmInstance.account_id.in_(ids), VmInstance.removed.is_(None),
                                       VmInstance.state.notin_(NOT_COUNTED)).subquery()
        volumes = select(Volume).where(Volume.account_id.in_(ids), Volume.removed.is_(None)).subquery()
        templates = select(Template).where(Template.account_id.in_(ids), Template.removed.is_(None),
                                           Template.template_type == "USER").subquery()
        query = {
            0: select(func.count()).select_from(vms),
            8: select(func.coalesce(func.sum(vms.c.cpu_number), 0)),
            9: select(func.coalesce(func.sum(vms.c.memory_mb), 0)),
            2: select(func.count()).select_from(volumes),
            10: select(func.coalesce(func.sum(volumes.c.size_bytes), 0)),
            4: select(func.count()).select_from(templates),
            11: select(func.coalesce(func.sum(templates.c.size_bytes), 0)),
        }.get(rtype.number)
        return int(self.session.execute(query).scalar_one()) if query is not None else 0

    def _accounts_under(self, domain: Domain) -> list[int]:
        return list(self.session.execute(
            select(Account.id).join(Domain, Domain.id == Account.domain_id).where(
                (Domain.id == domain.id) | Domain.path.startswith(domain.path.rstrip("/") + "/"))).scalars())

    def recount(self, types: Iterable[ResourceType], account: Account | None = None,
                domain: Domain | None = None) -> list[tuple[ResourceType, int]]:
        """updateResourceCount: set the counts of the account (or of the domain) from the stored resources."""
        out = []
        ids = [account.id] if account is not None else self._accounts_under(domain)
        for rtype in types:
            value = self.actual(rtype, ids)
            row = self._count_row(rtype, account, None if account is not None else domain, lock=True)
            if row is None:
                row = ResourceCount(type=rtype.number, count=value, account_id=account.id if account else None,
                                    domain_id=None if account else domain.id)
                self.session.add(row)
            row.count = value
            out.append((rtype, value))
        self.session.flush()
        return out
