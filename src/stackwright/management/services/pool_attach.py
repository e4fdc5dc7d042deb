"""Attaching a primary storage pool on the hosts in its scope, as a job of recorded steps.

Every connected KVM host in the pool's scope (its cluster, or its zone for a zone-wide pool)
is asked to attach the pool (AttachPool: mount or reach it, prove it writable); each answer
is recorded on the pool at once: Up with the host's figures, or unreachable with the
reason. A host whose agent is not connected is skipped: it attaches the pool when it
registers. An AttachPool whose answer was not recorded before a restart is settled by
asking the host for the pool's figures (GetPoolStats) before it is sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from ..errors import ResourceUnavailable
from ..persistence.models import Host, StoragePool
from .gateway import AgentAbsent, HostRef
from .steps import AgentStep, DbStep, Settle, Steps

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger(__name__)

ATTACH_JOB = "attachStoragePool"
ATTACH_TIMEOUT = 120.0


def attach_job(ctx: Context, pool: str) -> Steps:
    """The system job of a new pool (`pool` is its uuid)."""
    row = ctx.session.execute(select(StoragePool).where(StoragePool.uuid == pool)).scalar_one_or_none()
    if row is not None:
        yield from attach_pool(row.id)


def attach_pool(pool_id: int) -> Steps:
    targets = yield DbStep(_targets, pool_id)
    if targets is None:
        return
    spec = codec.decode(m.PoolSpec, targets["pool"])
    for guid, name in targets["hosts"]:
        try:
            answer = yield AgentStep(HostRef(guid, name), m.AttachPool(pool=spec), ATTACH_TIMEOUT,
                                     settle=_attached_already(spec), connect_wait=0.0)
        except AgentAbsent:
            continue
        except ResourceUnavailable as e:
            log.warning("host %s could not attach pool %s (%s): %s", name, spec.uuid, spec.url, e.text)
            yield DbStep(_unreachable, pool_id, e.text)
            continue
        yield DbStep(_attached, pool_id, answer.stats)


def _attached_already(spec: m.PoolSpec) -> Settle:
    def settle(ask: Callable[[m.Request], m.Answer]) -> m.Answer | None:
        try:
            return ask(m.GetPoolStats(pool=spec))
        except AgentAbsent:
            raise
        except ResourceUnavailable:
            return None         # not attached there: attach it

    return settle


def _targets(ctx: Context, pool_id: int) -> dict[str, Any] | None:
    """The pool and the Up KVM hosts in its scope, or None when there is nothing to attach."""
    pool = ctx.session.get(StoragePool, pool_id)
    if pool is None or pool.removed is not None or not pool.url.lower().startswith("nfs://"):
        return None
    q = select(Host.guid, Host.name).where(Host.state == "Up", Host.removed.is_(None), Host.hypervisor == "KVM",
                                           Host.zone_id == pool.zone_id, Host.guid.is_not(None))
    if pool.cluster_id is not None:
        q = q.where(Host.cluster_id == pool.cluster_id)
    hosts = [[guid, name] for guid, name in ctx.session.execute(q.order_by(Host.id))]
    if not hosts:
        return None
    return {"pool": codec.encode(m.PoolSpec(uuid=pool.uuid, url=pool.url, mode="auto")), "hosts": hosts}


def _live_pool(ctx: Context, pool_id: int) -> StoragePool | None:
    pool = ctx.session.get(StoragePool, pool_id)
    return pool if pool is not None and pool.removed is None else None


def _attached(ctx: Context, pool_id: int, stats: m.PoolStats) -> None:
    pool = _live_pool(ctx, pool_id)
    if pool is not None:
        ctx.storage.pool_attached(pool, stats.capacity_bytes, stats.used_bytes)


def _unreachable(ctx: Context, pool_id: int, reason: str) -> None:
    pool = _live_pool(ctx, pool_id)
    if pool is not None:
        ctx.storage.pool_unreachable(pool, reason)
