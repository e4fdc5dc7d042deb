"""Pods: createPod, updatePod, deletePod, listPods."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Param, String, Uuid
from ..api.registry import Success, api_command
from ..formatting import compact
from ..persistence.models import Pod, Zone

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

# Every range is untagged and for guests: system VMs get no reserved range here.
_UNTAGGED = "vlan://untagged"

POD_FIELDS = (
    ("id", "the ID of the Pod"), ("name", "the name of the Pod"),
    ("zoneid", "the Zone ID of the Pod"), ("zonename", "the Zone name of the Pod"),
    ("gateway", "the gateway of the Pod"), ("netmask", "the netmask of the Pod"),
    ("startip", "the starting IP for the Pod", "list"), ("endip", "the ending IP for the Pod", "list"),
    ("forsystemvms", "indicates if range is dedicated for CPVM and SSVM", "list"),
    ("vlanid", "indicates Vlan ID for the range", "list"),
    ("ipranges", "the IP ranges for the Pod", "list"),
    ("allocationstate", "the allocation state of the Pod"),
)


def pod_view(pod: Pod) -> dict[str, Any]:
    ranges = [{"startip": pod.start_ip, "endip": pod.end_ip, "forsystemvms": "0", "vlanid": _UNTAGGED}]
    return compact({
        "id": pod.uuid,
        "name": pod.name,
        "zoneid": pod.zone.uuid,
        "zonename": pod.zone.name,
        "gateway": pod.gateway,
        "netmask": pod.netmask,
        "startip": [r["startip"] for r in ranges],
        "endip": [r["endip"] for r in ranges],
        "forsystemvms": [r["forsystemvms"] for r in ranges],
        "vlanid": [r["vlanid"] for r in ranges],
        "ipranges": ranges,
        "allocationstate": pod.allocation_state,
    })


@api_command("createPod", response="pod", fields=POD_FIELDS, params=[
    Param("name", String(), required=True, description="the name of the Pod"),
    Param("zoneid", Uuid(Zone), required=True, description="the Zone ID in which the Pod will be created"),
    Param("gateway", String(), required=True, description="the gateway for the Pod"),
    Param("netmask", String(), required=True, description="the netmask for the Pod"),
    Param("startip", String(), required=True, description="the starting IP address for the Pod"),
    Param("endip", String(), description="the ending IP address for the Pod; defaults to the last usable address of the subnet"),
    Param("allocationstate", String(), description="Allocation state of this Pod for allocation of new resources"),
])
def create_pod(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a new Pod."""
    pod = ctx.hierarchy.create_pod(
        zone=p.zoneid, name=p.name, gateway=p.gateway, netmask=p.netmask,
        start_ip=p.startip, end_ip=p.endip, allocation=p.allocationstate,
    )
    return pod_view(pod)


@api_command("updatePod", response="pod", fields=POD_FIELDS, params=[
    Param("id", Uuid(Pod), required=True, description="the ID of the Pod"),
    Param("name", String(), description="the name of the Pod"),
    Param("gateway", String(), description="the gateway for the Pod"),
    Param("netmask", String(), description="the netmask of the Pod"),
    Param("allocationstate", String(), description="Allocation state of this cluster for allocation of new resources"),
    Param("startip", String(), description="the starting IP address for the Pod (ignored: ranges keep their addresses)"),
    Param("endip", String(), description="the ending IP address for the Pod (ignored: ranges keep their addresses)"),
])
def update_pod(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a Pod."""
    pod = ctx.hierarchy.update_pod(p.id, name=p.name, gateway=p.gateway, netmask=p.netmask,
                                   allocation=p.allocationstate)
    return pod_view(pod)


@api_command("deletePod", params=[
    Param("id", Uuid(Pod), required=True, description="the ID of the Pod"),
])
def delete_pod(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a Pod."""
    ctx.hierarchy.delete_pod(p.id)
    return Success()


@api_command("listPods", response="pod", cacheable=True, fields=POD_FIELDS, params=[
    Param("id", Uuid(Pod), description="list Pods by ID"),
    Param("name", String(), description="list Pods by name"),
    Param("zoneid", Uuid(Zone), description="list Pods by Zone ID"),
    Param("allocationstate", String(), description="list pods by allocation state"),
    Param("showcapacities", Boolean(), description="flag to display the capacity of the pods"),
])
def list_pods(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all Pods."""

    def render(pod: Pod) -> dict[str, Any]:
        view = pod_view(pod)
        if p.showcapacities:
            view["capacity"] = ctx.capacity.rows(pod=pod)
        return view

    return listed(ctx.hierarchy.list_pods(p), render)
