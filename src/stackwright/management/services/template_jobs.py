"""Template downloads and deletions, and templates' copies on primary pools, as recorded steps.

**Who downloads.** CloudStack has a Secondary Storage VM download templates. Here the agent
of an Up KVM host of the store's zone does it (`DownloadTemplate`): it reaches the zone's
NFS image store already (it checks it when the store is added) and needs nothing but the
standard library to fetch over http(s). The agent runs the download in the background and
the job follows it (`QueryDownload`, next when the download should end at the rate seen, at
most every two seconds), recording each step's progress on
the copy's row, so `listTemplates` shows `NN% Downloaded`, then `Download Complete`.

**Zones of Simulator hosts.** A zone whose hosts are all Simulator hosts has nothing that
writes the image store (a Simulator host's agent is simulated in the engine and keeps what it
stores in memory), so a download there fails at once with a status saying so, instead of
waiting for a KVM host; the built-in Simulator template serves those hosts. A zone with no
host yet waits, like one whose KVM hosts are all down.

**Restarts.** A restarted engine replays the job and asks again; the agent answers for a
download under way or complete, so nothing runs twice. A restarted agent has lost what was
under way (the image is incomplete and has no template.properties, so it is never taken as
complete): the job starts the download again, on that host or another. An unreachable
image store or an absent host makes the job wait and retry (`MAX_RETRIES` times, every
`RETRY_SECONDS`) rather than fail. A download that cannot succeed (HTTP error, checksum,
format, size) fails at once with the agent's reason, and nothing is left on the store.

**Copies on pools.** The first root volume of a template on a pool has the template copied
there (`CopyTemplate`, a `TemplatePoolRef` Creating, then Ready); each root volume is a qcow2
overlay on that copy. The copy is removed once no live volume uses it and the template is
deleted (at the template's deletion, or at the expunge of its last volume).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from ..errors import CloudRuntimeError, ResourceUnavailable
from ..persistence.models import Host, ImageStore, StoragePool, Template, TemplatePoolRef, TemplateStoreRef, Zone, utcnow
from .gateway import HostRef
from .steps import AgentStep, DbStep, Steps, WaitStep
from .templates import (
    ALLOCATED,
    CACHE_CREATING,
    CACHE_READY,
    DOWNLOAD_COMPLETE,
    DOWNLOADING,
    FAILED,
    READY,
    TemplateService,
    failed_status,
    progress_status,
)
from .vms import pool_spec

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger(__name__)

DESTROYING = "Destroying"
POLL_SECONDS = 2.0                 # the longest wait between two QueryDownload
MIN_POLL_SECONDS = 0.1
RETRY_SECONDS = 10.0
MAX_RETRIES = 360                  # an hour of an unreachable store or no host before the download fails
START_TIMEOUT = 60.0
QUERY_TIMEOUT = 30.0
DELETE_TIMEOUT = 120.0
COPY_TIMEOUT = 3600.0


# --- downloads ----------------------------------------------------------------------------


def download_job(ctx: Context, template: str, store: str) -> Steps:
    """The system job of one copy of a template (`template`, `store`: uuids)."""
    ref = ctx.session.execute(
        select(TemplateStoreRef).join(Template, Template.id == TemplateStoreRef.template_id)
        .join(ImageStore, ImageStore.id == TemplateStoreRef.store_id)
        .where(Template.uuid == template, ImageStore.uuid == store)).scalar_one_or_none()
    if ref is not None:
        yield from download(ref.id)


def download(ref_id: int) -> Steps:
    while True:
        target = yield DbStep(_download_target, ref_id)
        if target is None:
            return
        if "wait" in target:
            yield WaitStep(_pause, RETRY_SECONDS)
            continue
        host = HostRef(*target["host"])
        request = codec.decode(m.DownloadTemplate, target["request"])
        try:
            status = yield AgentStep(host, request, START_TIMEOUT)
            seen = None
            while status.state == "downloading":
                if not (yield DbStep(_progress, ref_id, status)):
                    return
                seen, interval = next_query(status, seen, time.monotonic())
                yield WaitStep(_pause, interval)
                status = yield AgentStep(host, m.QueryDownload(location=request.location), QUERY_TIMEOUT)
        except ResourceUnavailable as e:
            yield DbStep(_interrupted, ref_id, f"host {host.name}: {e.text}", False)
            continue
        if status.state == "complete":
            yield DbStep(_complete, ref_id, status)
            return
        if status.state == "failed":
            if status.error_code == "storage_unreachable":
                yield DbStep(_interrupted, ref_id, status.error, True)
                continue
            yield DbStep(_failed, ref_id, status.error)
            return
        yield DbStep(_interrupted, ref_id, f"host {host.name} no longer has the download (its agent restarted)",
                     False)


def next_query(status: m.DownloadStatus, seen: tuple[int, float] | None,
               now: float) -> tuple[tuple[int, float], float]:
    """((bytes, time) seen now, seconds until the next QueryDownload): when the download should
    end at the rate seen since the last answer, at least MIN_POLL_SECONDS and at most POLL_SECONDS,
    so the end of a short download is seen when it happens rather than up to POLL_SECONDS later."""
    current = (status.downloaded_bytes, now)
    if seen is None or now <= seen[1]:
        return current, MIN_POLL_SECONDS
    if not status.total_bytes:
        # No Content-Length: twice the last wait.
        return current, min(POLL_SECONDS, max(MIN_POLL_SECONDS, 2 * (now - seen[1])))
    rate = (status.downloaded_bytes - seen[0]) / (now - seen[1])
    if rate <= 0:
        return current, POLL_SECONDS
    remaining = max(0, status.total_bytes - status.downloaded_bytes) / rate
    return current, min(POLL_SECONDS, max(MIN_POLL_SECONDS, remaining))


def _pause(waiter: Any, seconds: float) -> None:
    waiter.sleep(seconds)


def _live_ref(ctx: Context, ref_id: int) -> tuple[TemplateStoreRef, Template] | None:
    """The copy and its template while the copy is still to be downloaded."""
    ref = ctx.session.get(TemplateStoreRef, ref_id)
    if ref is None or ref.state not in (ALLOCATED, DOWNLOADING):
        return None
    template = ctx.session.get(Template, ref.template_id)
    if template is None or template.removed is not None:
        return None
    return ref, template


def _location(ref: TemplateStoreRef, store: ImageStore, template: Template) -> m.TemplateLocation:
    directory, name = ref.install_path.rsplit("/", 1)
    return m.TemplateLocation(store_url=store.url, directory=directory, file_name=name,
                              format=template.format.lower())


def _download_target(ctx: Context, ref_id: int) -> dict | None:
    live = _live_ref(ctx, ref_id)
    if live is None:
        return None
    ref, template = live
    store = ctx.session.get(ImageStore, ref.store_id)
    if store is None or store.removed is not None:
        _end(ctx, ref, template, FAILED, failed_status("the image store was removed"))
        return None
    hosts = ctx.session.execute(select(Host).where(
        Host.zone_id == ref.zone_id, Host.hypervisor == "KVM", Host.state == "Up", Host.removed.is_(None),
        Host.guid.is_not(None)).order_by(Host.id)).unique().scalars().all()
    if not hosts:
        zone = ctx.session.get(Zone, ref.zone_id)
        kinds = set(ctx.session.execute(select(Host.hypervisor).where(
            Host.zone_id == ref.zone_id, Host.removed.is_(None))).scalars())
        if kinds and "KVM" not in kinds:
            _failed(ctx, ref_id, f"zone {zone.name} has only {', '.join(sorted(kinds))} hosts; their agents are "
                                 f"simulated in the engine and write no image store, and templates are downloaded "
                                 f"by the agent of a KVM host of the zone: add one and register the template again")
            return None
        return _retry(ctx, ref, template, f"no Up KVM host in zone {zone.name} can download it")
    host = hosts[ref.attempts % len(hosts)]
    ref.state, ref.updated = DOWNLOADING, utcnow()
    service = TemplateService(ctx)
    request = m.DownloadTemplate(
        location=_location(ref, store, template), url=template.url or "", checksum=template.checksum or "",
        max_bytes=service.max_bytes(), allowed_sites=[str(n) for n in service.allowed_sites()],
        management_networks={str(network): name for network, name in service.management_networks()},
        properties={"id": str(template.id), "uniquename": template.uuid, "description": template.display_text or "",
                    "public": str(template.is_public).lower(), "hvm": "true"})
    return {"host": [host.guid, host.name], "request": codec.encode(request)}


def _retry(ctx: Context, ref: TemplateStoreRef, template: Template, reason: str) -> dict | None:
    ref.attempts += 1
    if ref.attempts > MAX_RETRIES:
        _end(ctx, ref, template, FAILED, failed_status(f"{reason}, for {MAX_RETRIES} tries"))
        return None
    ref.status = f"{progress_status(ref.percent)} (waiting: {reason})"[:1024]
    ref.updated = utcnow()
    TemplateService(ctx).refresh(template)
    return {"wait": True}


def _progress(ctx: Context, ref_id: int, status: m.DownloadStatus) -> bool:
    live = _live_ref(ctx, ref_id)
    if live is None:
        return False
    ref, template = live
    percent = min(99, status.downloaded_bytes * 100 // status.total_bytes) if status.total_bytes else 0
    ref.percent, ref.downloaded_bytes = percent, status.downloaded_bytes
    ref.status, ref.updated = progress_status(percent), utcnow()
    _store_reachable(ctx, ref)
    TemplateService(ctx).refresh(template)
    return True


def _interrupted(ctx: Context, ref_id: int, reason: str, store_down: bool) -> None:
    live = _live_ref(ctx, ref_id)
    if live is None:
        return
    ref, template = live
    if store_down:
        store = ctx.session.get(ImageStore, ref.store_id)
        ctx.storage.image_store_unreachable(store, reason)
    log.warning("download of template %s into %s interrupted: %s", template.uuid, ref.install_path, reason)
    ref.state = ALLOCATED
    _retry(ctx, ref, template, reason)


def _complete(ctx: Context, ref_id: int, status: m.DownloadStatus) -> None:
    live = _live_ref(ctx, ref_id)
    if live is None:
        return
    ref, template = live
    ref.percent, ref.downloaded_bytes = 100, status.physical_size
    ref.physical_size, ref.virtual_size = status.physical_size, status.virtual_size
    _store_reachable(ctx, ref)
    _end(ctx, ref, template, READY, DOWNLOAD_COMPLETE)
    ctx.event("TEMPLATE.DOWNLOAD.SUCCESS", f"Downloaded {template.name} into {ref.install_path} "
                                           f"({status.physical_size} bytes)", template.uuid)


def _failed(ctx: Context, ref_id: int, reason: str) -> None:
    live = _live_ref(ctx, ref_id)
    if live is None:
        return
    ref, template = live
    _end(ctx, ref, template, FAILED, failed_status(reason))
    ctx.event("TEMPLATE.DOWNLOAD.FAILED", f"Download of {template.name} from {template.url} failed: {reason}",
              template.uuid, level="ERROR")


def _end(ctx: Context, ref: TemplateStoreRef, template: Template, state: str, status: str) -> None:
    ref.state, ref.status, ref.updated = state, status, utcnow()
    TemplateService(ctx).refresh(template)
    log.info("template %s on store %s: %s", template.uuid, ref.store_id, status)


def _store_reachable(ctx: Context, ref: TemplateStoreRef) -> None:
    store = ctx.session.get(ImageStore, ref.store_id)
    if store is not None and store.state != "Up":
        store.state, store.status_message = "Up", None


# --- deletion ------------------------------------------------------------------------------


def delete_template(template_id: int) -> Steps:
    """deleteTemplate / deleteIso: the template's files on its stores, then its unused copies on
    pools; the template row is removed last. A store that cannot be reached fails the job, which
    can be run again."""
    targets = yield DbStep(_begin_delete, template_id)
    for target in targets["stores"]:
        location = codec.decode(m.TemplateLocation, target["location"])
        if target["host"] is None:
            raise CloudRuntimeError(f"Failed to delete {targets['name']} from image store {target['store']}: no Up "
                                    f"KVM host in its zone can reach it; retry once a host is Up")
        try:
            yield AgentStep(HostRef(*target["host"]), m.DeleteTemplate(location=location), DELETE_TIMEOUT)
        except ResourceUnavailable as e:
            raise CloudRuntimeError(f"Failed to delete {targets['name']} from image store {target['store']}: "
                                    f"{e.text}; retry once the store is reachable") from None
        yield DbStep(_store_copy_deleted, target["ref"])
    yield DbStep(_deleted, template_id)
    copies = yield DbStep(_unused_copies, template_id)
    for copy in copies:
        yield from drop_copy(copy)


def _begin_delete(ctx: Context, template_id: int) -> dict:
    template = ctx.session.get(Template, template_id)
    stores = []
    for ref in ctx.session.execute(select(TemplateStoreRef).where(
            TemplateStoreRef.template_id == template_id)).scalars():
        store = ctx.session.get(ImageStore, ref.store_id)
        ref.state, ref.updated = DESTROYING, utcnow()
        if store is None or store.removed is not None:
            continue
        host = ctx.session.execute(select(Host).where(
            Host.zone_id == ref.zone_id, Host.hypervisor == "KVM", Host.state == "Up", Host.removed.is_(None),
            Host.guid.is_not(None)).order_by(Host.id)).unique().scalars().first()
        stores.append({"ref": ref.id, "store": store.name, "host": [host.guid, host.name] if host else None,
                       "location": codec.encode(_location(ref, store, template))})
    template.status = "Deleting"
    return {"name": template.name, "stores": stores}


def _store_copy_deleted(ctx: Context, ref_id: int) -> None:
    ref = ctx.session.get(TemplateStoreRef, ref_id)
    if ref is not None:
        ctx.session.delete(ref)


def _deleted(ctx: Context, template_id: int) -> None:
    template = ctx.session.get(Template, template_id)
    if template.removed is None:
        template.removed, template.is_ready = utcnow(), False
        ctx.event("ISO.DELETE" if template.is_iso else "TEMPLATE.DELETE", f"Deleted {template.name}", template.uuid)


def _unused_copies(ctx: Context, template_id: int) -> list[dict]:
    return [t for t in (_copy_target(ctx, ref) for ref in TemplateService(ctx).unused_copies(template_id)) if t]


def _copy_target(ctx: Context, ref: TemplatePoolRef) -> dict | None:
    pool = ctx.session.get(StoragePool, ref.pool_id)
    host = ctx.vms.host_for_pool(pool, 0) if pool is not None and pool.removed is None else None
    if host is None:
        log.warning("template copy %s stays on pool %s: no Up host reaches the pool", ref.volume_name, ref.pool_id)
        return None
    return {"ref": ref.id, "host": [host.guid, host.name], "pool": codec.encode(pool_spec(pool)),
            "name": ref.volume_name, "pool_name": pool.name}


def drop_copy(copy: dict) -> Steps:
    """Delete a template's unused copy from its pool, then its record."""
    try:
        yield AgentStep(HostRef(*copy["host"]), m.DeleteVolume(pool=codec.decode(m.PoolSpec, copy["pool"]), name=copy["name"]), DELETE_TIMEOUT)
    except ResourceUnavailable as e:
        log.warning("could not delete template copy %s from pool %s: %s", copy["name"], copy["pool_name"], e.text)
        return
    yield DbStep(_copy_dropped, copy["ref"])


def _copy_dropped(ctx: Context, ref_id: int) -> None:
    ref = ctx.session.get(TemplatePoolRef, ref_id)
    if ref is not None:
        ctx.session.delete(ref)


def copy_after_expunge(ctx: Context, template_id: int | None, pool_id: int | None) -> dict | None:
    """After a root volume went: the template's copy on that pool, when it is now unused and the
    template deleted."""
    if template_id is None or pool_id is None:
        return None
    template = ctx.session.get(Template, template_id)
    if template is None or template.removed is None:
        return None
    ref = ctx.session.execute(select(TemplatePoolRef).where(
        TemplatePoolRef.template_id == template_id, TemplatePoolRef.pool_id == pool_id)).scalar_one_or_none()
    if ref is None or TemplateService(ctx).pool_users(template_id, pool_id) > 0:
        return None
    return _copy_target(ctx, ref)


# --- root volumes from templates ---------------------------------------------------------------


def plan_copy(ctx: Context, template: Template, zone: Zone, pool: StoragePool) -> dict | None:
    """For a root volume about to be made on `pool`: how it gets the template's copy there. None for
    a built-in template (a blank disk). Creates the pool's copy record on first use."""
    if not template.url:
        return None
    service = TemplateService(ctx)
    store_ref = service.ready_ref(template, zone)
    if store_ref is None:
        raise CloudRuntimeError(f"Template {template.name} ({template.uuid}) has not been downloaded to zone "
                                f"{zone.name} yet")
    store = ctx.session.get(ImageStore, store_ref.store_id)
    ref = ctx.session.execute(select(TemplatePoolRef).where(
        TemplatePoolRef.template_id == template.id, TemplatePoolRef.pool_id == pool.id)).scalar_one_or_none()
    copy = ref is None
    if copy:
        if store.state != "Up":
            ctx.agents.check_image_store(store.uuid)        # in the background; this step fails
            raise ResourceUnavailable(
                f"Template {template.name} is not on storage pool {pool.name} yet and its image store {store.name} "
                f"({store.url}) is unreachable: {store.status_message or 'not checked'}; retry once it is back")
        ref = TemplatePoolRef(template_id=template.id, pool_id=pool.id, state=CACHE_CREATING,
                              volume_name=f"template-{template.uuid}", size_bytes=store_ref.virtual_size)
        ctx.session.add(ref)
        ctx.session.flush()
    return {"ref": ref.id, "name": ref.volume_name, "copy": copy, "ready": ref.state == CACHE_READY,
            "store": store.name, "location": codec.encode(_location(store_ref, store, template)),
            "template": template.name}


def copy_ready(ctx: Context, ref_id: int, size_bytes: int) -> None:
    ref = ctx.session.get(TemplatePoolRef, ref_id)
    if ref is not None:
        ref.state, ref.size_bytes = CACHE_READY, size_bytes


def copy_failed(ctx: Context, ref_id: int) -> None:
    ref = ctx.session.get(TemplatePoolRef, ref_id)
    if ref is not None and ref.state == CACHE_CREATING:
        ctx.session.delete(ref)


def await_copy(waiter: Any, ref_id: int, timeout: float = COPY_TIMEOUT) -> bool:
    """Another job is copying the template onto the pool: True once its copy is Ready, False when
    it failed (the record went) or did not finish in `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with waiter.read() as ctx:
            ref = ctx.session.get(TemplatePoolRef, ref_id)
            state = ref.state if ref is not None else None
        if state == CACHE_READY:
            return True
        if state is None:
            return False
        waiter.sleep(POLL_SECONDS)
    return False
