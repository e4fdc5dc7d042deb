"""Events: what the engine did, one row per change, written in the change's own transaction.

A service records an event with `ctx.event(type, description, resource uuid)`: the row joins
the session of the change, so an event never outlives a rolled-back change and a change never
commits without its event. Types are CloudStack's (`VM.START`, `MAINT.PREPARE`...); the kind
of resource an event names follows from its type (RESOURCE_TYPES). listEvents reads them,
archiveEvents hides them from it, deleteEvents removes them.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update

from ..errors import InvalidParameterValue, PermissionDenied
from ..persistence.models import Account, Event
from .queries import Filter, NOCASE, filtered, keyword, page

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import SimpleNamespace

    from sqlalchemy import ColumnElement

    from ..context import Context
    from .queries import Page

# Event type prefix -> the resource type its resource id names (longest prefix first).
RESOURCE_TYPES = (
    ("SERVICE.OFFERING.", "ServiceOffering"), ("CONFIGURATION.", "Configuration"), ("IMAGE.STORE.", "ImageStore"),
    ("MAINT.CANCEL.PS", "StoragePool"), ("MAINT.PREPARE.PS", "StoragePool"), ("MAINT.", "Host"),
    ("VM.", "VirtualMachine"), ("VOLUME.", "Volume"), ("ZONE.", "Zone"), ("POD.", "Pod"),
    ("CLUSTER.", "Cluster"), ("HOST.", "Host"), ("SP.", "StoragePool"), ("HA.", "VirtualMachine"),
)
LEVELS = ("INFO", "WARN", "ERROR")

EVENT_FILTERS = (
    Filter("type", Event.type, NOCASE),
    Filter("level", Event.level, NOCASE),
    Filter("state", Event.state, NOCASE),
    Filter("resourcetype", Event.resource_type, NOCASE),
    keyword(Event.type, Event.description),
)


def resource_type(event_type: str) -> str | None:
    for prefix, kind in RESOURCE_TYPES:
        if event_type.startswith(prefix):
            return kind
    return None


class EventService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def record(self, type: str, description: str, resource_uuid: str | None = None, level: str = "INFO",
               account_id: int | None = None) -> Event:
        """An event of the change this context's transaction makes, by its caller (none for the
        engine's own work), on behalf of `account_id` when given (the owner of a guest the
        engine restarted, say)."""
        # The caller's ids are known from the key cache: no need to load its User and Account.
        principal = self.ctx.principal
        event = Event(type=type, level=level, description=description, resource_uuid=resource_uuid,
                      resource_type=resource_type(type) if resource_uuid else None,
                      account_id=account_id if account_id is not None
                      else principal.account_id if principal is not None else None,
                      user_id=principal.user_id if principal is not None else None)
        self.session.add(event)
        return event

    # --- reads ----------------------------------------------------------------------------------

    def list_page(self, p: SimpleNamespace) -> Page:
        """The events listEvents `p` asks for, newest first: the caller's own, or with listall
        (root admins) everyone's and the engine's own; archived events are left out."""
        ctx = self.ctx
        q = select(Event).where(Event.archived.is_(False))
        if p.account:
            if not ctx.is_root_admin and p.account != ctx.account.name:
                raise PermissionDenied(f"Account {ctx.account.name} does not have permission to list the events of "
                                       f"account {p.account}")
            q = q.join(Account, Account.id == Event.account_id).where(Account.name == p.account,
                                                                      Account.removed.is_(None))
        elif not (ctx.is_root_admin and p.listall):
            q = q.where(Event.account_id == ctx.principal.account_id)
        if p.domainid is not None:
            q = q.where(Event.account_id.in_(select(Account.id).where(Account.domain_id == p.domainid.id)))
        if p.id is not None:
            q = q.where(Event.id == p.id.id)
        if p.resourceid:
            q = q.where(Event.resource_uuid == p.resourceid)
        if p.level and p.level.upper() not in LEVELS:
            raise InvalidParameterValue(f"Level {p.level} is invalid; use one of {', '.join(LEVELS)}")
        q = q.where(*between(Event.created, p.startdate, p.enddate))
        return page(ctx, p, filtered(q, EVENT_FILTERS, p), Event.id.desc())

    # --- archiveEvents, deleteEvents ---------------------------------------------------------------

    def archive(self, ids: Sequence[Event], type: str | None, start: dt.datetime | None,
                end: dt.datetime | None) -> int:
        """Archive the events named by `ids`, `type` and the date range; how many."""
        which = self._which(ids, type, start, end)
        return self.session.execute(update(Event).where(*which, Event.archived.is_(False)).values(archived=True)
                                    .execution_options(synchronize_session=False)).rowcount

    def delete(self, ids: Sequence[Event], type: str | None, start: dt.datetime | None,
               end: dt.datetime | None) -> int:
        which = self._which(ids, type, start, end)
        return self.session.execute(delete(Event).where(*which).execution_options(synchronize_session=False)).rowcount

    def _which(self, ids: Sequence[Event], type: str | None, start: dt.datetime | None,
               end: dt.datetime | None) -> list[ColumnElement[bool]]:
        if not ids and not type and end is None:
            raise InvalidParameterValue("either ids, type or enddate must be specified")
        if start is not None and end is not None and start > end:
            raise InvalidParameterValue("Please provide a valid date range, start date cannot be after end date")
        which = between(Event.created, start, end)
        if ids:
            which.append(Event.id.in_([e.id for e in ids]))
        if type:
            which.append(Event.type == type)
        if not self.ctx.is_root_admin:
            which.append(Event.account_id == self.ctx.principal.account_id)
        return which


def between(column: ColumnElement[dt.datetime], start: dt.datetime | None, end: dt.datetime | None) -> list[ColumnElement[bool]]:
    """Conditions for `column` within [start, end]; a date without time as the end covers that whole day."""
    out = []
    if start is not None:
        out.append(column >= start)
    if end is not None:
        if end.time() == dt.time(0):
            end = end + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
        out.append(column <= end)
    return out
