"""Clusters: addCluster, updateCluster, deleteCluster, listClusters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Param, String, Uuid
from ..api.registry import ListResult, Success, api_command
from ..formatting import compact, ratio
from ..persistence.models import Cluster, Pod, Zone

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context

CLUSTER_FIELDS = (
    ("id", "the cluster ID"), ("name", "the cluster name"),
    ("podid", "the Pod ID of the cluster"), ("podname", "the Pod name of the cluster"),
    ("zoneid", "the Zone ID of the cluster"), ("zonename", "the Zone name of the cluster"),
    ("hypervisortype", "the hypervisor type of the cluster"), ("clustertype", "the type of the cluster"),
    ("allocationstate", "the allocation state of the cluster"),
    ("managedstate", "whether this cluster is managed by CloudStack"),
    ("cpuovercommitratio", "The cpu overcommit ratio of the cluster"),
    ("memoryovercommitratio", "The memory overcommit ratio of the cluster"),
    ("resourcedetails", "Meta data associated with the cluster (key/value pairs)", "map"),
    ("arch", "CPU Arch of the hosts in the cluster"),
)


def cluster_view(ctx: Context, cluster: Cluster) -> dict[str, Any]:
    details = {d.name: d.value for d in cluster.details}
    return compact({
        "id": cluster.uuid,
        "name": cluster.name,
        "podid": cluster.pod.uuid,
        "podname": cluster.pod.name,
        "zoneid": cluster.zone.uuid,
        "zonename": cluster.zone.name,
        "hypervisortype": cluster.hypervisor,
        "clustertype": cluster.cluster_type,
        "allocationstate": cluster.allocation_state,
        "managedstate": cluster.managed_state,
        "cpuovercommitratio": ratio(ctx.settings.cluster_ratio(cluster, "cpu.overprovisioning.factor")),
        "memoryovercommitratio": ratio(ctx.settings.cluster_ratio(cluster, "mem.overprovisioning.factor")),
        "resourcedetails": details or None,
        "arch": cluster.arch,
    })


@api_command("addCluster", response="cluster", returns_list=True, fields=CLUSTER_FIELDS, params=[
    Param("clustername", String(), required=True, description="the cluster name"),
    Param("zoneid", Uuid(Zone), required=True, description="the Zone ID for the cluster"),
    Param("podid", Uuid(Pod), required=True, description="the Pod ID for the host"),
    Param("hypervisor", String(), required=True, description="hypervisor type of the cluster: KVM or Simulator"),
    Param("clustertype", String(), required=True, description="type of the cluster: CloudManaged, ExternalManaged"),
    Param("allocationstate", String(), description="Allocation state of this cluster for allocation of new resources"),
    Param("url", String(2048), description="the URL"),
    # KVM and Simulator clusters have no credentials; accepted for compatibility, never stored.
    Param("username", String(), description="the username for the cluster"),
    Param("password", String(), description="the password for the host"),
    Param("arch", String(), description="the CPU arch of the cluster: x86_64 or aarch64"),
])
def add_cluster(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Adds a new cluster."""
    cluster = ctx.hierarchy.add_cluster(
        zone=p.zoneid, pod=p.podid, name=p.clustername, hypervisor=p.hypervisor, kind=p.clustertype,
        allocation=p.allocationstate, url=p.url, arch=p.arch,
    )
    return ListResult([cluster_view(ctx, cluster)], 1)


@api_command("updateCluster", response="cluster", fields=CLUSTER_FIELDS, params=[
    Param("id", Uuid(Cluster), required=True, description="the ID of the Cluster"),
    Param("clustername", String(), description="the cluster name"),
    Param("hypervisor", String(), description="hypervisor type of the cluster"),
    Param("clustertype", String(), description="hypervisor type of the cluster"),
    Param("allocationstate", String(), description="Allocation state of this cluster for allocation of new resources"),
    Param("managedstate", String(), description="whether this cluster is managed by CloudStack"),
    Param("arch", String(), description="the CPU arch of the cluster: x86_64 or aarch64"),
])
def update_cluster(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates an existing cluster."""
    cluster = ctx.hierarchy.update_cluster(
        p.id, name=p.clustername, hypervisor=p.hypervisor, kind=p.clustertype,
        allocation=p.allocationstate, managed=p.managedstate, arch=p.arch,
    )
    return cluster_view(ctx, cluster)


@api_command("deleteCluster", params=[
    Param("id", Uuid(Cluster), required=True, description="the cluster ID"),
])
def delete_cluster(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a cluster."""
    ctx.hierarchy.delete_cluster(p.id)
    return Success()


@api_command("listClusters", response="cluster", cacheable=True, fields=CLUSTER_FIELDS, params=[
    Param("id", Uuid(Cluster), description="lists clusters by the cluster ID"),
    Param("name", String(), description="lists clusters by the cluster name"),
    Param("zoneid", Uuid(Zone), description="lists clusters by Zone ID"),
    Param("podid", Uuid(Pod), description="lists clusters by Pod ID"),
    Param("hypervisor", String(), description="lists clusters by hypervisor type"),
    Param("clustertype", String(), description="lists clusters by cluster type"),
    Param("allocationstate", String(), description="lists clusters by allocation state"),
    Param("managedstate", String(), description="whether this cluster is managed by CloudStack"),
    Param("arch", String(), description="CPU arch of the clusters"),
    Param("showcapacities", Boolean(), description="flag to display the capacity of the clusters"),
])
def list_clusters(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists clusters."""

    def render(cluster: Cluster) -> dict[str, Any]:
        view = cluster_view(ctx, cluster)
        if p.showcapacities:
            view["capacity"] = ctx.capacity.rows(cluster=cluster)
        return view

    return listed(ctx.hierarchy.list_clusters(p), render)
