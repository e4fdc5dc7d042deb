"""Primary storage pools and image (secondary) stores.

A pool starts `Up` only when nothing has to be checked: pools of Simulator clusters (and
zone-wide Simulator pools) are simulated. Any other pool starts `Initialized` with a status
message saying what it waits for; the agent side reports back through `pool_attached()` or
`pool_unreachable()`, and only an `Up` pool takes part in allocation. Image stores have the
same kind of hooks (`image_store_checked()`, `image_store_unreachable()`).

Pool states follow CloudStack: Up <-> Disabled through updateStoragePool's `enabled`;
maintenance moves a pool to Maintenance, cancelling it brings the pool back; a pool is
deleted only from Maintenance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select

from ..errors import CloudRuntimeError, InvalidParameterValue
from ..persistence.models import Cluster, Entity, Host, ImageStore, Pod, StoragePool, Volume, Zone, utcnow
from . import alerts
from .hierarchy import HYPERVISORS, choose
from .hosts import tag_string  # pool tags follow the host tag rules
from .pool_attach import ATTACH_JOB
from .queries import EXACT, NOCASE, ROW, Filter, filtered, keyword, page

if TYPE_CHECKING:
    from types import SimpleNamespace
    from ..services.queries import Page
    from sqlalchemy import Select

    from ..context import Context

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Entity)

PRIMARY_PROVIDERS = ("DefaultPrimary",)
IMAGE_PROVIDERS = ("NFS", "S3", "Swift", "SMB")
PROVIDER_TYPES = {"primary": PRIMARY_PROVIDERS, "image": IMAGE_PROVIDERS}

SIMULATED_HYPERVISOR = "Simulator"
POOL_SCOPES = ("CLUSTER", "ZONE")
WAITING = "Initialized"
# States from which a pool may go into maintenance; Initialized too, so that a pool no
# host ever attached can still be put away and deleted.
MAINTENANCE_FROM = ("Up", "Disabled", "Initialized", "ErrorInMaintenance")
CANCEL_MAINTENANCE_FROM = ("Maintenance", "PrepareForMaintenance", "ErrorInMaintenance")
# Image store states (not part of the API; they decide where templates may go).
STORE_UP, STORE_UNREACHABLE = "Up", "Unreachable"


class StorageUrlError(ValueError):
    """A storage URL that cannot describe a pool; the message says why."""


@dataclass(frozen=True)
class PoolLocation:
    """Where a pool lives, parsed from its URL. `user_info` is never shown."""

    pool_type: str
    host: str
    port: int | None
    path: str
    user_info: str | None = None


def parse_pool_url(url: str) -> PoolLocation:
    """nfs://server[:port]/export, rbd://user:secret@monitor/pool, SharedMountPoint:///path, file:///path."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise InvalidParameterValue(
            f"scheme is null {url}, add nfs:// (or cifs://) as a prefix")
    scheme = scheme.lower()
    if scheme == "rbd":
        return _parse_rbd(rest)
    parts = urlsplit("x://" + rest)
    try:
        port = parts.port
    except ValueError:
        raise InvalidParameterValue(f"Invalid port in storage URL {url}") from None
    if scheme == "nfs":
        if not parts.hostname or not parts.path.strip("/"):
            raise InvalidParameterValue("host or path is null, should be nfs://hostname/path")
        return PoolLocation("NetworkFilesystem", parts.hostname, port, parts.path)
    kinds = {"sharedmountpoint": "SharedMountPoint", "file": "Filesystem"}
    if scheme in kinds:
        if not parts.path.strip("/"):
            raise InvalidParameterValue(f"path is null, should be {scheme}:///path")
        return PoolLocation(kinds[scheme], parts.hostname or "localhost", port, parts.path)
    raise StorageUrlError(
        f"scheme {scheme} is not supported; use nfs://, rbd://, SharedMountPoint:// or file://")


def _parse_rbd(rest: str) -> PoolLocation:
    # The secret is base64 and may hold '/', so split at the last '@' before the pool name.
    user_info = None
    if "@" in rest:
        user_info, _sep, rest = rest.rpartition("@")
    host_port, _sep, pool = rest.partition("/")
    host, _sep, port = host_port.partition(":")
    if not host or not pool.strip("/"):
        raise InvalidParameterValue("host or path is null, should be rbd://user:secret@monitor/pool")
    if port and not port.isdigit():
        raise InvalidParameterValue(f"Invalid port in storage URL rbd://{host_port}")
    return PoolLocation("RBD", host, int(port) if port else None, pool.strip("/"), user_info or None)


def provider_name(value: str | None, providers: Sequence[str]) -> str:
    """The canonical provider for `value` in any case; unknown names fall back to the default."""
    for name in providers:
        if value and value.lower() == name.lower():
            return name
    return providers[0]


class StorageService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    # --- primary storage -------------------------------------------------------------

    def create_pool(self, *, zone: Zone, name: str, url: str, pod: Pod | None = None,
                    cluster: Cluster | None = None, scope: str | None = None, hypervisor: str | None = None,
                    provider: str | None = None, tags: Iterable[str] | None = None,
                    capacity_bytes: int | None = None, capacity_iops: int | None = None,
                    managed: bool = False) -> StoragePool:
        scope = self._pool_scope(scope)
        if scope == "CLUSTER" and cluster is None:
            raise InvalidParameterValue("cluster id can't be null, if scope is cluster")
        if scope == "ZONE":
            if not hypervisor:
                raise InvalidParameterValue(
                    "Missing parameter hypervisor. Hypervisor type is required to create zone wide "
                    "primary storage.")
            hypervisor = self._zone_wide_hypervisor(hypervisor)
            pod = cluster = None
        self._check_capacity(capacity_bytes, "capacitybytes")
        self._check_capacity(capacity_iops, "capacityiops")
        self._live(zone, "zone")
        if cluster is not None:
            self._live(cluster, "cluster")
            if pod is None:
                pod = self.session.get(Pod, cluster.pod_id)
            if cluster.pod_id != pod.id:
                raise InvalidParameterValue(
                    f"Cluster {cluster.name} does not belong to pod {pod.name}")
            hypervisor = cluster.hypervisor
        if pod is not None:
            self._live(pod, "pod")
            if pod.zone_id != zone.id:
                raise InvalidParameterValue(f"Pod {pod.name} does not belong to zone {zone.name}")
        try:
            where = parse_pool_url(url)
        except StorageUrlError as e:
            raise CloudRuntimeError(f"Failed to add data store: {e}") from None

        pool = StoragePool(
            name=name, zone_id=zone.id, pod_id=pod.id if pod else None,
            cluster_id=cluster.id if cluster else None, scope=scope,
            pool_type=where.pool_type, host_address=where.host, port=where.port, path=where.path,
            url=url, hypervisor=hypervisor, provider=provider_name(provider, PRIMARY_PROVIDERS),
            tags=tag_string(tags), managed=bool(managed), capacity_iops=capacity_iops,
            capacity_bytes=capacity_bytes or 0, used_bytes=0,
        )
        if hypervisor == SIMULATED_HYPERVISOR:
            pool.state, pool.status_message = "Up", None
            if not capacity_bytes:
                pool.capacity_bytes = self.ctx.settings.typed("simulator.pool.capacity")
        else:
            pool.state = WAITING
            pool.status_message = self._waiting_message(zone, cluster)
        self.session.add(pool)
        self.session.flush()
        if pool.state == WAITING:
            # The hosts in its scope attach it in a job of the engine's own.
            self.ctx.jobs.create_system(ATTACH_JOB, {"pool": pool.uuid}, "StoragePool", pool.uuid)
        log.info("created %s storage pool %s (%s) in zone %s, state %s", where.pool_type, name,
                 pool.uuid, zone.name, pool.state)
        self.ctx.event("SP.CREATE", f"Successfully created storage pool {name}", pool.uuid)
        return pool

    def _notify_agents(self, action: str, uuid: str) -> None:
        """Once committed, have the hosts' agents attach or check the new storage."""
        notify = getattr(self.ctx.agents, action)
        self.ctx.after_commit(lambda: notify(uuid))

    def update_pool(self, pool: StoragePool, *, name: str | None = None, tags: Iterable[str] | None = None,
                    capacity_bytes: int | None = None, capacity_iops: int | None = None,
                    enabled: bool | None = None) -> StoragePool:
        self._live(pool, "storage pool")
        self._check_capacity(capacity_bytes, "capacitybytes")
        self._check_capacity(capacity_iops, "capacityiops")
        if capacity_bytes is not None and capacity_bytes < (pool.used_bytes or 0):
            raise InvalidParameterValue(
                f"Capacity bytes ({capacity_bytes}) cannot be less than the used bytes ({pool.used_bytes}) "
                f"of storage pool {pool.name}")
        if enabled is False and pool.state != "Up":
            raise InvalidParameterValue(
                f"Primary storage with id {pool.uuid} cannot be disabled. Storage pool state : {pool.state}")
        if enabled is True and pool.state != "Disabled":
            raise InvalidParameterValue(
                f"Primary storage with id {pool.uuid} cannot be enabled. Storage pool state : {pool.state}")
        if name:
            pool.name = name
        if tags is not None:
            pool.tags = tag_string(tags)
        if capacity_bytes is not None:
            pool.capacity_bytes = capacity_bytes
        if capacity_iops is not None:
            pool.capacity_iops = capacity_iops
        if enabled is False:
            pool.state = "Disabled"
            self.ctx.event("SP.DISABLE", f"Disabled storage pool {pool.name}", pool.uuid)
        elif enabled is True:
            pool.state = self._ready_state(pool)
            self.ctx.event("SP.ENABLE", f"Enabled storage pool {pool.name}", pool.uuid)
        self.session.flush()
        return pool

    def delete_pool(self, pool: StoragePool, forced: bool = False) -> None:
        self._live(pool, "storage pool")
        if pool.state != "Maintenance":
            raise InvalidParameterValue(
                f"Unable to delete storage due to it is not in Maintenance state, id: {pool.uuid}")
        if not forced and self.allocated_by_pool([pool.id]):
            raise CloudRuntimeError(f"Cannot delete pool {pool.name} as there are associated volumes for this pool")
        pool.state = "Removed"
        pool.removed = utcnow()
        log.info("deleted storage pool %s (%s)%s", pool.name, pool.uuid, " (forced)" if forced else "")
        self.ctx.event("SP.DELETE", f"Successfully deleted storage pool {pool.name}", pool.uuid)

    def enable_maintenance(self, pool: StoragePool) -> StoragePool:
        self._live(pool, "storage pool")
        if pool.state not in MAINTENANCE_FROM:
            raise InvalidParameterValue(
                f"Primary storage with id {pool.uuid} is not ready for migration, as the status is:{pool.state}")
        pool.state = "Maintenance"
        self.session.flush()
        self.ctx.event("MAINT.PREPARE.PS", f"Maintenance of storage pool {pool.name} started", pool.uuid)
        return pool

    def cancel_maintenance(self, pool: StoragePool) -> StoragePool:
        self._live(pool, "storage pool")
        if pool.state not in CANCEL_MAINTENANCE_FROM:
            raise CloudRuntimeError(
                f"Primary storage with id {pool.uuid} is not ready to complete migration, "
                f"as the status is:{pool.state}")
        pool.state = self._ready_state(pool)
        self.session.flush()
        self.ctx.event("MAINT.CANCEL.PS", f"Maintenance of storage pool {pool.name} cancelled", pool.uuid)
        return pool

    # Reports from the agent side ---------------------------------------------------------

    def pool_attached(self, pool: StoragePool, capacity_bytes: int, used_bytes: int) -> StoragePool:
        """A host attached `pool` (or refreshed its statistics): it can serve volumes."""
        pool.capacity_bytes = int(capacity_bytes)
        pool.used_bytes = int(used_bytes)
        if pool.status_message is not None:
            log.info("storage pool %s (%s) is reachable: %d of %d bytes used", pool.name, pool.uuid,
                     used_bytes, capacity_bytes)
        pool.status_message = None
        if pool.state in (WAITING, "Attaching"):
            pool.state = "Up"
            self.ctx.event("SP.UP", f"Storage pool {pool.name} is attached", pool.uuid)
        self.session.flush()
        return pool

    def pool_unreachable(self, pool: StoragePool, message: str) -> StoragePool:
        """No host could attach `pool`; it stays out of allocation until one does."""
        log.warning("storage pool %s (%s) is unreachable: %s", pool.name, pool.uuid, message)
        pool.status_message = message[:1024]
        if pool.state in ("Up", "Attaching"):
            pool.state = WAITING
        self.ctx.event("SP.UNREACHABLE", f"Storage pool {pool.name} is unreachable: {message}",
                       pool.uuid, level="ERROR")
        self.ctx.alerts.raise_alert(alerts.STORAGE_MISC, f"Storage pool {pool.name} ({pool.uuid}) is unreachable: "
                                                         f"{message}", zone_id=pool.zone_id, pod_id=pool.pod_id,
                                    cluster_id=pool.cluster_id, resource_uuid=pool.uuid)
        self.session.flush()
        return pool

    # Queries -------------------------------------------------------------------------

    def pools_for_host(self, host: Host) -> Sequence[StoragePool]:
        """Pools a host of its cluster should have attached: every live pool not in maintenance."""
        cluster = self.session.get(Cluster, host.cluster_id)
        return self.session.execute(
            self.pools_of(cluster).where(StoragePool.state.notin_(("Maintenance", "Removed")))
            .order_by(StoragePool.id)
        ).scalars().all()

    def allocatable_pools(self, cluster: Cluster, tags: Iterable[str] = ()) -> list[StoragePool]:
        """Up pools a volume of a VM in `cluster` may use, carrying all `tags`."""
        pools = self.session.execute(
            self.pools_of(cluster).where(StoragePool.state == "Up").order_by(StoragePool.id)
        ).scalars().all()
        wanted = {t for t in tags if t}
        return [p for p in pools if wanted <= set(p.tag_list)]

    def pools_of(self, cluster: Cluster) -> Select[tuple[StoragePool]]:
        """Cluster pools of `cluster` plus zone-wide pools of its zone and hypervisor."""
        return select(StoragePool).where(
            StoragePool.removed.is_(None),
            or_(
                StoragePool.cluster_id == cluster.id,
                (StoragePool.scope == "ZONE") & (StoragePool.zone_id == cluster.zone_id)
                & (StoragePool.hypervisor == cluster.hypervisor),
            ),
        )

    def overprovisioning_factor(self, pool: StoragePool) -> str | None:
        return self.ctx.settings.scoped_value("storage.overprovisioning.factor", "storagepool", pool)

    def allocated_bytes(self, pool: StoragePool) -> int:
        """Bytes promised to the volumes placed on `pool` (their full size, thin or not)."""
        return self.allocated_by_pool([pool.id]).get(pool.id, 0)

    def allocated_by_pool(self, pool_ids: Iterable[int]) -> dict[int, int]:
        """{pool id: bytes promised to its live volumes}, in one grouped query."""
        if not pool_ids:
            return {}
        rows = self.session.execute(
            select(Volume.pool_id, func.sum(Volume.size_bytes))
            .where(Volume.pool_id.in_(list(pool_ids)), Volume.removed.is_(None)).group_by(Volume.pool_id)
        ).all()
        return {pool_id: int(total or 0) for pool_id, total in rows}

    # --- image stores ----------------------------------------------------------------

    def add_image_store(self, *, provider: str, name: str | None = None, url: str | None = None,
                        zone: Zone | None = None, details: Mapping[str, str] | None = None) -> ImageStore:
        provider = provider_name(provider, IMAGE_PROVIDERS)
        details = dict(details or {})
        if provider == "S3" and not url:
            url = details.get("endpoint")
        if not url:
            raise InvalidParameterValue(
                f"url is required to add an image store of provider {provider}")
        protocol = self._image_store_protocol(provider, url, details)
        name = name or url
        if zone is not None:
            self._live(zone, "zone")
        if self._image_store_by_name(name) is not None:
            raise InvalidParameterValue(
                f"The image store with name {name} already exists, try creating with another name")
        other = self.session.execute(
            select(ImageStore.provider).where(ImageStore.removed.is_(None), ImageStore.provider != provider)
            .limit(1)
        ).scalar_one_or_none()
        if other is not None:
            raise InvalidParameterValue(
                f"You can only add new image stores from the same provider {other} already added")
        store = ImageStore(
            name=name, zone_id=zone.id if zone else None, url=url, protocol=protocol,
            provider=provider, scope="ZONE" if zone else "REGION", readonly=False,
            state=STORE_UP, details=details,
        )
        self.session.add(store)
        self.session.flush()
        self._notify_agents("check_image_store", store.uuid)
        log.info("added %s image store %s (%s)", provider, name, store.uuid)
        self.ctx.event("IMAGE.STORE.ADD", f"Successfully added image store {name}", store.uuid)
        return store

    def update_image_store(self, store: ImageStore, *, readonly: bool | None = None,
                           name: str | None = None) -> ImageStore:
        self._live(store, "image store")
        if name and name != store.name:
            if self._image_store_by_name(name) is not None:
                raise InvalidParameterValue(
                    f"The image store with name {name} already exists, try creating with another name")
            store.name = name
        if readonly is not None:
            store.readonly = readonly
        self.session.flush()
        return store

    def delete_image_store(self, store: ImageStore) -> None:
        self._live(store, "image store")
        store.removed = utcnow()
        log.info("deleted image store %s (%s)", store.name, store.uuid)
        self.ctx.event("IMAGE.STORE.DELETE", f"Successfully deleted image store {store.name}", store.uuid)

    def image_store_checked(self, store: ImageStore, total_bytes: int, used_bytes: int) -> ImageStore:
        """The agent side reached `store` and could write to it."""
        store.total_bytes, store.used_bytes = int(total_bytes), int(used_bytes)
        store.state, store.status_message = STORE_UP, None
        self.session.flush()
        return store

    def image_store_unreachable(self, store: ImageStore, message: str) -> ImageStore:
        log.warning("image store %s (%s) is unreachable: %s", store.name, store.uuid, message)
        store.state, store.status_message = STORE_UNREACHABLE, message[:1024]
        self.ctx.event("IMAGE.STORE.UNREACHABLE", f"Image store {store.name} is unreachable: {message}",
                       store.uuid, level="ERROR")
        self.session.flush()
        return store

    def writable_image_stores(self, zone: Zone) -> Sequence[ImageStore]:
        """Stores templates of `zone` may be written to: the zone's own, then region-wide ones."""
        stores = self.session.execute(
            select(ImageStore).where(
                ImageStore.removed.is_(None), ImageStore.readonly.is_(False),
                ImageStore.state == STORE_UP,
                or_(ImageStore.zone_id == zone.id, ImageStore.zone_id.is_(None)),
            ).order_by(ImageStore.zone_id.is_(None), ImageStore.id)
        ).scalars().all()
        return stores

    def _image_store_by_name(self, name: str) -> ImageStore | None:
        return self.session.execute(
            select(ImageStore).where(ImageStore.removed.is_(None), ImageStore.name == name)
        ).scalars().first()

    @staticmethod
    def _image_store_protocol(provider: str, url: str, details: Mapping[str, str]) -> str:
        scheme, sep, _rest = url.partition("://")
        if provider == "S3" and not sep:
            # An S3 endpoint is a bare host name; the protocol comes from `usehttps`.
            return "https" if str(details.get("usehttps", "")).lower() == "true" else "http"
        if not sep or not scheme:
            raise InvalidParameterValue(
                f"uri.scheme is null {url}, add nfs:// (or cifs://) as a prefix")
        if provider == "NFS":
            parts = urlsplit(url)
            if scheme.lower() != "nfs" or not parts.hostname or not parts.path.strip("/"):
                raise InvalidParameterValue(
                    "Your host and/or path is wrong.  Make sure it's of the format nfs://hostname/path")
        return scheme.lower()

    # --- shared checks -----------------------------------------------------------------

    @staticmethod
    def _pool_scope(scope: str | None) -> str:
        if not scope:
            return "CLUSTER"
        if scope.upper() not in POOL_SCOPES:
            raise InvalidParameterValue(f"invalid scope for pool {scope}")
        return scope.upper()

    @staticmethod
    def _zone_wide_hypervisor(value: str) -> str:
        return choose(value, HYPERVISORS, f"zone wide storage pool is not supported for hypervisor type {value}; "
                      f"use {' or '.join(HYPERVISORS)}")

    @staticmethod
    def _check_capacity(value: int | None, what: str) -> None:
        if value is not None and value < 0:
            raise InvalidParameterValue(f"{what} must be a positive number, got {value}")

    @staticmethod
    def _waiting_message(zone: Zone, cluster: Cluster | None) -> str:
        if cluster is not None:
            return f"waiting for a host of cluster {cluster.name} to attach the pool"
        return f"waiting for a host of zone {zone.name} to attach the pool"

    @staticmethod
    def _ready_state(pool: StoragePool) -> str:
        """Where a pool returns to after Disabled or Maintenance: Up unless it still waits for a host."""
        return "Up" if pool.status_message is None else WAITING

    @staticmethod
    def _live(row: E, what: str) -> E:
        if row.removed is not None:
            raise InvalidParameterValue(f"Unable to find {what} by id {row.uuid}")
        return row

    # --- reads: listStoragePools, listImageStores -------------------------------------

    def list_pools(self, p: SimpleNamespace) -> Page:
        if p.hostid is not None:
            q = self.pools_of(self.session.get(Cluster, p.hostid.cluster_id))
        else:
            q = select(StoragePool).where(StoragePool.removed.is_(None))
        return page(self.ctx, p, filtered(q, POOL_FILTERS, p), StoragePool.id)

    def list_image_stores(self, p: SimpleNamespace) -> Page:
        q = select(ImageStore).where(ImageStore.removed.is_(None))
        return page(self.ctx, p, filtered(q, IMAGE_STORE_FILTERS, p), ImageStore.id)

    def places_of(self, pool: StoragePool) -> tuple[Zone | None, Pod | None, Cluster | None]:
        """(zone, pod or None, cluster or None) of a pool, for its view."""
        get = self.session.get
        return (get(Zone, pool.zone_id), get(Pod, pool.pod_id) if pool.pod_id else None,
                get(Cluster, pool.cluster_id) if pool.cluster_id else None)

    def zone_of(self, store: ImageStore) -> Zone | None:
        return self.session.get(Zone, store.zone_id) if store.zone_id else None


POOL_FILTERS = (
    Filter("id", StoragePool.id, ROW),
    Filter("name", StoragePool.name, NOCASE),
    Filter("zoneid", StoragePool.zone_id, ROW),
    Filter("podid", StoragePool.pod_id, ROW),
    Filter("clusterid", StoragePool.cluster_id, ROW),
    Filter("ipaddress", StoragePool.host_address, EXACT),
    Filter("path", StoragePool.path, EXACT),
    Filter("scope", StoragePool.scope, NOCASE),
    Filter("status", StoragePool.state, NOCASE),
    keyword(StoragePool.name),
)

IMAGE_STORE_FILTERS = (
    Filter("id", ImageStore.id, ROW),
    Filter("name", ImageStore.name, NOCASE),
    Filter("zoneid", ImageStore.zone_id, ROW),
    Filter("protocol", ImageStore.protocol, NOCASE),
    Filter("provider", ImageStore.provider, NOCASE),
    Filter("readonly", ImageStore.readonly, EXACT),
    keyword(ImageStore.name),
)
