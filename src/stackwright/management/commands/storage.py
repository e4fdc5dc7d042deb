"""Primary storage: createStoragePool, updateStoragePool, deleteStoragePool, listStoragePools,
listStorageProviders, enableStorageMaintenance, cancelStorageMaintenance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Long, Map, Param, String, Tags, Uuid, given
from ..api.registry import ListResult, Success, api_command
from ..errors import InvalidParameterValue
from ..formatting import compact, date, ratio
from ..persistence.models import Cluster, Host, Pod, StoragePool, Zone
from ..services.pool_attach import attach_pool
from ..services.queries import by_id
from ..services.steps import DbStep
from ..services.storage import PROVIDER_TYPES

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context
    from ..services.steps import Steps

POOL_FIELDS = (
    ("id", "the ID of the storage pool"), ("name", "the name of the storage pool"),
    ("zoneid", "the Zone ID of the storage pool"), ("zonename", "the Zone name of the storage pool"),
    ("podid", "the Pod ID of the storage pool"), ("podname", "the Pod name of the storage pool"),
    ("clusterid", "the ID of the cluster for the storage pool"),
    ("clustername", "the name of the cluster for the storage pool"),
    ("ipaddress", "the IP address of the storage pool"), ("path", "the storage pool path"),
    ("type", "the storage pool type"), ("scope", "the scope of the storage pool"),
    ("state", "the state of the storage pool"), ("hypervisor", "the hypervisor type of the storage pool"),
    ("provider", "Storage provider for this pool"), ("tags", "the tags for the storage pool"),
    ("istagarule", "whether the storage pool tags are a rule", "boolean"),
    ("disksizetotal", "the total disk size of the storage pool", "long"),
    ("disksizeallocated", "the pool's currently allocated disk size", "long"),
    ("disksizeused", "the pool's currently used disk size", "long"),
    ("capacityiops", "IOPS CloudStack can provision from this storage pool", "long"),
    ("overprovisionfactor", "the overprovisionfactor for the storage pool"),
    ("storagecapabilities", "the storage pool capabilities", "map"),
    ("created", "the date and time the storage pool was created", "date"),
)
CMD_PACKAGE = "org.apache.cloudstack.api.command.admin.storage."


def storage_pool_view(ctx: Context, pool: StoragePool) -> dict[str, Any]:
    zone, pod, cluster = ctx.storage.places_of(pool)
    return compact({
        "id": pool.uuid,
        "name": pool.name,
        "zoneid": zone.uuid,
        "zonename": zone.name,
        "podid": pod.uuid if pod else None,
        "podname": pod.name if pod else None,
        "clusterid": cluster.uuid if cluster else None,
        "clustername": cluster.name if cluster else None,
        "ipaddress": pool.host_address,
        "path": pool.path,
        "type": pool.pool_type,
        "scope": pool.scope,
        "state": pool.state,
        "hypervisor": pool.hypervisor,
        "provider": pool.provider,
        "tags": pool.tags,
        "istagarule": False,
        "managed": pool.managed,
        "disksizetotal": pool.capacity_bytes,
        "disksizeallocated": ctx.storage.allocated_bytes(pool),
        "disksizeused": pool.used_bytes,
        "capacityiops": pool.capacity_iops,
        "overprovisionfactor": ratio(ctx.storage.overprovisioning_factor(pool)),
        "storagecapabilities": {"VOLUME_SNAPSHOT_QUIESCEVM": "false"},
        "hasannotations": False,
        "created": date(pool.created),
    })


@api_command("createStoragePool", response="storagepool", fields=POOL_FIELDS, params=[
    Param("name", String(), required=True, description="the name for the storage pool"),
    Param("url", String(2048), required=True, description="the URL of the storage pool"),
    Param("zoneid", Uuid(Zone), required=True, description="the Zone ID for the storage pool"),
    Param("podid", Uuid(Pod), description="the Pod ID for the storage pool"),
    Param("clusterid", Uuid(Cluster), description="the cluster ID for the storage pool"),
    Param("scope", String(), description="the scope of the storage: cluster (default) or zone"),
    Param("hypervisor", String(), description="hypervisor type of the hosts in zone that will be attached to this storage pool. "
                                              "KVM, VMware supported as of now."),
    Param("provider", String(), description="the storage provider name"),
    Param("tags", Tags(), description="the tags for the storage pool"),
    Param("istagarule", Boolean(), description="Whether the informed tag is a JS interpretable rule or not."),
    Param("managed", Boolean(), description="whether the storage should be managed by CloudStack"),
    Param("capacitybytes", Long(), description="bytes CloudStack can provision from this storage pool"),
    Param("capacityiops", Long(), description="IOPS CloudStack can provision from this storage pool"),
    Param("details", Map(), description="the details for the storage pool"),
])
def create_storage_pool(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a storage pool."""
    pool = ctx.storage.create_pool(
        zone=p.zoneid, name=p.name, url=p.url, pod=p.podid, cluster=p.clusterid, scope=p.scope,
        hypervisor=p.hypervisor, provider=p.provider, tags=p.tags,
        capacity_bytes=p.capacitybytes, capacity_iops=p.capacityiops, managed=p.managed,
    )
    return storage_pool_view(ctx, pool)


@api_command("updateStoragePool", response="storagepool", fields=POOL_FIELDS, params=[
    Param("id", Uuid(StoragePool), required=True, description="the Id of the storage pool"),
    Param("name", String(), description="Change the name of the storage pool"),
    Param("tags", Tags(), description="comma-separated list of tags for the storage pool"),
    Param("capacitybytes", Long(), description="bytes CloudStack can provision from this storage pool"),
    Param("capacityiops", Long(), description="IOPS CloudStack can provision from this storage pool"),
    Param("enabled", Boolean(), description="false to disable the pool for allocation of new volumes, true to enable it back."),
    Param("istagarule", Boolean(), description="Whether the informed tag is a JS interpretable rule or not."),
])
def update_storage_pool(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a storage pool."""
    pool = ctx.storage.update_pool(
        p.id, name=p.name, tags=p.tags if given(p, "tags") else None,
        capacity_bytes=p.capacitybytes, capacity_iops=p.capacityiops, enabled=p.enabled,
    )
    return storage_pool_view(ctx, pool)


@api_command("deleteStoragePool", params=[
    Param("id", Uuid(StoragePool), required=True, description="Storage pool id"),
    Param("forced", Boolean(), description="Force destroy storage pool (force expunge volumes in Destroyed state as a part of pool removal)"),
])
def delete_storage_pool(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a storage pool."""
    ctx.storage.delete_pool(p.id, forced=bool(p.forced))
    return Success()


@api_command("listStoragePools", response="storagepool", fields=POOL_FIELDS, params=[
    Param("id", Uuid(StoragePool), description="the ID of the storage pool"),
    Param("name", String(), description="the name of the storage pool"),
    Param("zoneid", Uuid(Zone), description="the Zone ID for the storage pool"),
    Param("podid", Uuid(Pod), description="the Pod ID for the storage pool"),
    Param("clusterid", Uuid(Cluster), description="list storage pools belonging to the specific cluster"),
    Param("ipaddress", String(), description="the IP address for the storage pool"),
    Param("path", String(), description="the storage pool path"),
    Param("scope", String(), description="the scope of the storage pool"),
    Param("status", String(), description="the status of the storage pool"),
    Param("hostid", Uuid(Host), description="host ID of the storage pools"),
])
def list_storage_pools(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists storage pools."""
    return listed(ctx.storage.list_pools(p), lambda pool: storage_pool_view(ctx, pool))


@api_command("listStorageProviders", response="dataStoreProvider", params=[
    Param("type", String(), required=True, description="the type of storage provider: either primary or image"),
])
def list_storage_providers(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists storage providers."""
    kind = p.type.lower()
    if kind not in PROVIDER_TYPES:
        raise InvalidParameterValue(
            f"Invalid parameter type {p.type}; use one of {', '.join(PROVIDER_TYPES)}")
    items = [{"name": name, "type": kind} for name in PROVIDER_TYPES[kind]]
    return ListResult(items, len(items))


@api_command(
    "enableStorageMaintenance", response="storagepool", fields=POOL_FIELDS, async_job=True,
    instance_type="StoragePool", response_key="prepareprimarystorageformaintenanceresponse",
    cmd_class=CMD_PACKAGE + "PreparePrimaryStorageForMaintenanceCmd", params=[
        Param("id", Uuid(StoragePool), required=True, description="Primary storage ID"),
    ])
def enable_storage_maintenance(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Puts storage pool into maintenance state."""
    return storage_pool_view(ctx, ctx.storage.enable_maintenance(p.id))


@api_command(
    "cancelStorageMaintenance", response="storagepool", fields=POOL_FIELDS, async_job=True,
    instance_type="StoragePool", response_key="cancelprimarystoragemaintenanceresponse",
    cmd_class=CMD_PACKAGE + "CancelPrimaryStorageMaintenanceCmd", params=[
        Param("id", Uuid(StoragePool), required=True, description="the primary storage ID"),
    ])
def cancel_storage_maintenance(ctx: Context, p: SimpleNamespace) -> Steps:
    """Cancels maintenance for primary storage."""
    pool_id = p.id.id
    yield DbStep(_cancel_maintenance, pool_id)
    # The hosts attach the pool again, as after its creation.
    yield from attach_pool(pool_id)
    return (yield DbStep(_pool_view, pool_id))


def _cancel_maintenance(ctx: Context, pool_id: int) -> None:
    ctx.storage.cancel_maintenance(by_id(ctx.session, StoragePool, pool_id))


def _pool_view(ctx: Context, pool_id: int) -> dict[str, Any]:
    return storage_pool_view(ctx, by_id(ctx.session, StoragePool, pool_id))
