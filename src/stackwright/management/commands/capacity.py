"""Capacity: listCapacity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.params import Boolean, Integer, Param, String, Uuid
from ..api.registry import ListResult, api_command
from ..errors import InvalidParameterValue
from ..persistence.models import Cluster, Pod, Zone
from ..services.queries import check_paging

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context

CAPACITY_FIELDS = (
    ("type", "the capacity type", "short"), ("name", "the capacity name"),
    ("zoneid", "the Zone ID"), ("zonename", "the Zone name"), ("podid", "the Pod ID"),
    ("podname", "the Pod name"), ("clusterid", "the Cluster ID"), ("clustername", "the Cluster name"),
    ("capacitytotal", "the total capacity available", "long"),
    ("capacityused", "the capacity currently in use", "long"),
    ("capacityallocated", "the capacity currently in allocated", "long"),
    ("percentused", "the percentage of capacity currently in use"),
)


@api_command("listCapacity", response="capacity", fields=CAPACITY_FIELDS, params=[
    Param("zoneid", Uuid(Zone), description="lists capacity by the Zone ID"),
    Param("podid", Uuid(Pod), description="lists capacity by the Pod ID"),
    Param("clusterid", Uuid(Cluster), description="lists capacity by the Cluster ID"),
    Param("type", Integer(), description="lists capacity by type: 0 memory, 1 CPU, 2 primary storage used, "
          "3 primary storage allocated, 5 pod IPs, 6 secondary storage"),
    Param("fetchlatest", Boolean(), description="recalculate capacities and fetch the latest"),
    Param("sortby", String(), description="Sort the results. Available values: Usage"),
])
def list_capacity(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all the system wide capacities."""
    sortby = p.sortby.lower() if p.sortby else None
    if sortby not in (None, "usage"):
        raise InvalidParameterValue(f"Invalid sortby value {p.sortby}; the only supported value is Usage")
    offset, limit = check_paging(ctx, p)
    rows = ctx.capacity.rows(zone=p.zoneid, pod=p.podid, cluster=p.clusterid, type=p.type, sortby=sortby)
    page = rows[offset:] if limit is None else rows[offset:offset + limit]
    return ListResult(page, len(rows))
