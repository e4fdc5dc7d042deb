"""Events and alerts: listEvents, archiveEvents, deleteEvents, listAlerts, archiveAlerts, deleteAlerts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Date, Integer, List, Param, String, Uuid
from ..api.registry import Success, api_command
from ..formatting import compact, date
from ..persistence.models import Account, Alert, Domain, Event, User
from ..services.queries import rows_by_id

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

EVENT_FIELDS = (
    ("id", "the ID of the event"), ("username", "the name of the user who performed the action"),
    ("type", "the type of the event (see event types)"), ("level", "the event level (INFO, WARN, ERROR)"),
    ("description", "a brief description of the event"), ("account", "the account name for the account that owns the object being acted on"),
    ("domainid", "the id of the account's domain"), ("domain", "the name of the account's domain"),
    ("created", "the date the event was created", "date"), ("state", "the state of the event"),
    ("parentid", "whether the event is parented"), ("resourceid", "the id of the resource"),
    ("resourcetype", "the type of the resource"), ("archived", "whether the event has been archived or not", "boolean"),
)
ALERT_FIELDS = (
    ("id", "the id of the alert"), ("type", "One of the following alert types: MEMORY = 0, CPU = 1, STORAGE = 2, "
                                            "STORAGE_ALLOCATED = 3, ..., HOST = 7, USERVM = 8, ..., STORAGE_MISC = 12 "
                                            "(see docs/ha.md)", "short"),
    ("name", "the name of the alert"), ("description", "description of the alert"),
    ("sent", "the date and time the alert was sent", "date"),
)
RANGE = (
    Param("type", String(), description="the type of the events"),
    Param("startdate", Date(), description="the start date range (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss)"),
    Param("enddate", Date(), description="the end date range (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss)"),
)


def render_events(ctx: Context, events: list[Event]) -> list[dict[str, Any]]:
    accounts = rows_by_id(ctx.session, Account, (e.account_id for e in events))
    users = rows_by_id(ctx.session, User, (e.user_id for e in events))
    out = []
    for e in events:
        account, user = accounts.get(e.account_id), users.get(e.user_id)
        out.append(compact({
            "id": e.uuid, "username": user.username if user else "system", "type": e.type, "level": e.level,
            "description": e.description, "account": account.name if account else "system",
            "domainid": account.domain.uuid if account else None,
            "domain": account.domain.name if account else None, "created": date(e.created), "state": e.state,
            "resourceid": e.resource_uuid, "resourcetype": e.resource_type, "archived": e.archived,
        }))
    return out


def alert_view(alert: Alert) -> dict[str, Any]:
    return {"id": alert.uuid, "type": alert.type, "name": alert.name, "description": alert.subject,
            "sent": date(alert.created)}


@api_command("listEvents", response="event", admin_only=False, fields=EVENT_FIELDS, params=[
    Param("id", Uuid(Event), description="the ID of the event"),
    Param("type", String(), description="the event type (see event types)"),
    Param("level", String(), description="the event level (INFO, WARN, ERROR)"),
    Param("state", String(), description="the state of the event"),
    Param("startdate", Date(), description="the start date range of the list you want to retrieve"),
    Param("enddate", Date(), description="the end date range of the list you want to retrieve"),
    Param("resourceid", String(), description="the ID of the resource associated with the event"),
    Param("resourcetype", String(), description="the type of the resource associated with the event"),
    Param("account", String(), description="list resources by account"),
    Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
    Param("isrecursive", Boolean(), description="defaults to false"),
])
def list_events(ctx: Context, p: SimpleNamespace) -> ListResult:
    """A command to list events."""
    return listed(ctx.events.list_page(p), render_many=lambda rows: render_events(ctx, rows))


@api_command("archiveEvents", admin_only=False, params=[
    Param("ids", List(Uuid(Event)), description="the IDs of the events"), *RANGE])
def archive_events(ctx: Context, p: SimpleNamespace) -> Success:
    """Archive one or more events."""
    ctx.events.archive(p.ids or [], p.type, p.startdate, p.enddate)
    return Success()


@api_command("deleteEvents", admin_only=False, params=[
    Param("ids", List(Uuid(Event)), description="the IDs of the events"), *RANGE])
def delete_events(ctx: Context, p: SimpleNamespace) -> Success:
    """Delete one or more events."""
    ctx.events.delete(p.ids or [], p.type, p.startdate, p.enddate)
    return Success()


ALERT_RANGE = (
    Param("type", Integer(), description="the type of the alerts"),
    Param("startdate", Date(), description="the start date range (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss)"),
    Param("enddate", Date(), description="the end date range (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss)"),
)


@api_command("listAlerts", response="alert", fields=ALERT_FIELDS, params=[
    Param("id", Uuid(Alert), description="the ID of the alert"),
    Param("type", Integer(), description="list by alert type"),
    Param("name", String(), description="list by alert name"),
])
def list_alerts(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all alerts."""
    return listed(ctx.alerts.list_page(p), alert_view)


@api_command("archiveAlerts", params=[Param("ids", List(Uuid(Alert)), description="the IDs of the alerts"),
                                      *ALERT_RANGE])
def archive_alerts(ctx: Context, p: SimpleNamespace) -> Success:
    """Archive one or more alerts."""
    ctx.alerts.archive(p.ids or [], p.type, p.startdate, p.enddate)
    return Success()


@api_command("deleteAlerts", params=[Param("ids", List(Uuid(Alert)), description="the IDs of the alerts"),
                                     *ALERT_RANGE])
def delete_alerts(ctx: Context, p: SimpleNamespace) -> Success:
    """Delete one or more alerts."""
    ctx.alerts.delete(p.ids or [], p.type, p.startdate, p.enddate)
    return Success()
