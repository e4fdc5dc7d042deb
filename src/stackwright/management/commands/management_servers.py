"""Management servers: listManagementServers."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Param, String, Uuid
from ..api.registry import api_command
from ..formatting import compact, date
from ..persistence.models import ManagementServer
from ..services import cluster

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

SERVER_FIELDS = (
    ("id", "the ID of the management server"), ("name", "the name of the management server"),
    ("state", "the state of the management server"), ("version", "the version of the management server"),
    ("serviceip", "the IP address other management servers reach it at"),
    ("ipaddress", "the IP address of the management server"),
    ("lastserverstart", "the last time this management server was started", "date"),
    ("lastserverstop", "the last time this management server was stopped", "date"),
    ("lastboottime", "the last time the host on which this management server runs was booted", "date"),
    ("osdistribution", "the name of the OS distribution running on the management server"),
    ("kernelversion", "the running OS kernel version for this management server"),
    ("agents", "the management server addresses agents are given (the host setting)", "list"),
    ("agentscount", "the number of host agents this management server holds", "long"),
    ("pendingjobscount", "the number of pending jobs this management server runs", "long"),
)


def _epoch_date(seconds: int | None) -> str | None:
    return None if seconds is None else date(dt.datetime.fromtimestamp(seconds, dt.timezone.utc))


@api_command("listManagementServers", response="managementserver", fields=SERVER_FIELDS, params=[
    Param("id", Uuid(ManagementServer), description="the id of the management server"),
    Param("name", String(), description="the name of the management server"),
    Param("state", String(), description="the state of the management server (Up, Down)"),
])
def list_management_servers(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists management servers."""
    agents = [a.strip() for a in (ctx.settings.get("host") or "").split(",") if a.strip()]

    def render_many(rows: list[ManagementServer]) -> list[dict[str, Any]]:
        hosts, jobs = cluster.served_counts(ctx.session, [r.msid for r in rows])
        return [compact({
            "id": r.uuid, "name": r.name, "state": r.state, "version": r.version,
            "serviceip": r.service_ip, "ipaddress": r.service_ip,
            "lastserverstart": date(r.last_start), "lastserverstop": date(r.last_stop),
            "lastboottime": _epoch_date((r.details or {}).get("boottime")),
            "osdistribution": (r.details or {}).get("osdistribution"),
            "kernelversion": (r.details or {}).get("kernelversion"),
            "agents": agents, "agentscount": hosts.get(r.msid, 0), "pendingjobscount": jobs.get(r.msid, 0),
        }) for r in rows]

    return listed(cluster.list_servers(ctx, p), render_many=render_many)
