"""Command handlers: one function per engine command, found through a registry.

Handlers are plain functions run in a worker thread (drivers block); they take
the `HandlerContext` and the command and return the command's answer.  Drivers
take and return the protocol's value types directly (`VmSpec`, `PoolStats`,
...), and every `AgentError` becomes an ``ErrorAnswer`` with its code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from stackwright.agent.downloads import Downloads
from stackwright.agent.errors import AgentError, UnsupportedCommand
from stackwright.agent.hypervisor.base import HypervisorDriver
from stackwright.agent.storage.base import StorageDriver
from stackwright.protocol import codec
from stackwright.protocol import messages as m
from stackwright.protocol.pki import write_file_atomic
from stackwright.protocol.framing import Frame, describe

log = logging.getLogger(__name__)

R = TypeVar("R", bound=m.Request)
T = TypeVar("T")
Handler = Callable[["HandlerContext", R], m.Answer]
HANDLERS: dict[type[m.Request], Handler] = {}


def handles(*command_types: type[m.Request]) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``command_types``."""

    def register(function: Handler) -> Handler:
        for command_type in command_types:
            if command_type in HANDLERS:
                raise RuntimeError(f"{command_type.__name__} already handled by {HANDLERS[command_type].__name__}")
            HANDLERS[command_type] = function
        return function

    return register


class HandlerContext:
    """What handlers work with: the hypervisor driver and, built on first use, the storage driver."""

    def __init__(
        self,
        hypervisor: HypervisorDriver,
        storage_factory: Callable[[], StorageDriver] | None = None,
        storage_mode: str = "auto",
        pools_file: Path | None = None,
    ):
        self.hypervisor = hypervisor
        self.storage_mode = storage_mode
        # The pools attached here, for the heartbeat service (stackwright.agent.heartbeat).
        self.pools_file = pools_file
        self._pools_lock = threading.Lock()
        self._storage_factory = storage_factory
        self._storage: StorageDriver | None = None
        self._storage_lock = threading.Lock()
        # Migrations under way, by guest name: a repeated MigrateVm waits for the running one.
        self._migrations: dict[str, Future[m.VmState]] = {}
        self._migrations_lock = threading.Lock()
        self.downloads = Downloads(lambda: self.storage)

    @property
    def storage(self) -> StorageDriver:
        with self._storage_lock:
            if self._storage is None:
                if self._storage_factory is None:
                    raise UnsupportedCommand("this agent has no storage driver configured")
                self._storage = self._storage_factory()
            return self._storage

    def pool(self, pool: m.PoolSpec) -> m.PoolSpec:
        """The pool as the driver gets it: the agent's storage.mode applies when the engine leaves it to ``auto``."""
        if pool.mode == "auto" and self.storage_mode != "auto":
            return dataclasses.replace(pool, mode=self.storage_mode)
        return pool

    def attached(self, pool: m.PoolSpec, present: bool) -> None:
        """Record in the pools file that `pool` is attached here (or no more)."""
        if self.pools_file is None:
            return
        with self._pools_lock:
            pools = read_pools(self.pools_file)
            pools = [p for p in pools if p.uuid != pool.uuid] + ([pool] if present else [])
            write_file_atomic(self.pools_file, json.dumps([codec.encode(p) for p in pools], indent=1).encode(),
                              mode=0o644)

    def migrate(self, command: m.MigrateVm) -> m.VmState:
        """Run one migration of a guest at a time; a request for a guest already migrating
        gets that migration's outcome."""
        with self._migrations_lock:
            running = self._migrations.get(command.name)
            mine = running is None
            if mine:
                running = self._migrations[command.name] = Future()
        if not mine:
            log.info("migration of %s is under way; waiting for it", command.name)
            return running.result()
        try:
            state = self.hypervisor.migrate(command.name, command.address, command.guid, command.vnc_listen,
                                            command.timeout)
        except BaseException as exc:
            running.set_exception(exc)
            raise
        else:
            running.set_result(state)
            return state
        finally:
            with self._migrations_lock:
                self._migrations.pop(command.name, None)

    def vm_states(self) -> dict[str, m.VmState]:
        return self.hypervisor.list_vms()

    def guest_report(self) -> tuple[dict[str, m.VmState], list[str]]:
        """What a ping says of the guests: their states, and those paused for storage errors."""
        return self.hypervisor.list_vms(), self.hypervisor.io_paused()

    def close(self) -> None:
        self.hypervisor.close()


# -- handlers -------------------------------------------------------------------------


@handles(m.Ready, m.CheckHealth)
def check_health(ctx: HandlerContext, command: m.Ready | m.CheckHealth) -> m.Answer:
    try:
        info = ctx.hypervisor.host_info()
        ctx.hypervisor.list_vms()
    except AgentError as exc:
        return m.ReadyAnswer(healthy=False, detail=f"{exc.code}: {exc}")
    return m.ReadyAnswer(healthy=True, detail="hypervisor reachable", host=info)


@handles(m.GetHostStats)
def get_host_stats(ctx: HandlerContext, command: m.GetHostStats) -> m.Answer:
    return m.HostStatsAnswer(stats=ctx.hypervisor.host_stats())


@handles(m.StartVm)
def start_vm(ctx: HandlerContext, command: m.StartVm) -> m.Answer:
    return m.VmStateAnswer(name=command.spec.name, state=ctx.hypervisor.start(command.spec))


@handles(m.StopVm)
def stop_vm(ctx: HandlerContext, command: m.StopVm) -> m.Answer:
    return m.VmStateAnswer(name=command.name, state=ctx.hypervisor.stop(command.name, force=command.force))


@handles(m.RebootVm)
def reboot_vm(ctx: HandlerContext, command: m.RebootVm) -> m.Answer:
    ctx.hypervisor.reboot(command.name)
    return m.VmStateAnswer(name=command.name, state=ctx.hypervisor.query(command.name))


@handles(m.QueryVm)
def query_vm(ctx: HandlerContext, command: m.QueryVm) -> m.Answer:
    return m.VmStateAnswer(name=command.name, state=ctx.hypervisor.query(command.name))


@handles(m.GetVmConsole)
def get_vm_console(ctx: HandlerContext, command: m.GetVmConsole) -> m.Answer:
    address, port = ctx.hypervisor.console(command.name)
    return m.VmConsoleAnswer(name=command.name, address=address, port=port)


@handles(m.PrepareForMigration)
def prepare_for_migration(ctx: HandlerContext, command: m.PrepareForMigration) -> m.Answer:
    ctx.hypervisor.prepare_migration(command.spec)
    return m.Ack()


@handles(m.MigrateVm)
def migrate_vm(ctx: HandlerContext, command: m.MigrateVm) -> m.Answer:
    return m.VmStateAnswer(name=command.name, state=ctx.migrate(command))


@handles(m.AttachDisk)
def attach_disk(ctx: HandlerContext, command: m.AttachDisk) -> m.Answer:
    ctx.hypervisor.attach_disk(command.name, command.disk)
    return m.VmDisksAnswer(name=command.name, devices=ctx.hypervisor.disks(command.name))


@handles(m.DetachDisk)
def detach_disk(ctx: HandlerContext, command: m.DetachDisk) -> m.Answer:
    ctx.hypervisor.detach_disk(command.name, command.device, command.timeout)
    return m.VmDisksAnswer(name=command.name, devices=ctx.hypervisor.disks(command.name))


@handles(m.QueryDisks)
def query_disks(ctx: HandlerContext, command: m.QueryDisks) -> m.Answer:
    return m.VmDisksAnswer(name=command.name, devices=ctx.hypervisor.disks(command.name))


@handles(m.ResizeVolume)
def resize_volume(ctx: HandlerContext, command: m.ResizeVolume) -> m.Answer:
    """A disk of a running guest grows live (the guest sees it); any other volume on its pool."""
    if command.vm and command.device:
        ctx.hypervisor.resize_disk(command.vm, command.device, command.size_bytes)
        return m.VolumeSizeAnswer(size_bytes=command.size_bytes)
    size = ctx.storage.resize_volume(ctx.pool(command.pool), command.name, command.size_bytes, command.shrink)
    return m.VolumeSizeAnswer(size_bytes=size)


@handles(m.QueryVolume)
def query_volume(ctx: HandlerContext, command: m.QueryVolume) -> m.Answer:
    return m.VolumeSizeAnswer(size_bytes=ctx.storage.volume_size(ctx.pool(command.pool), command.name))


@handles(m.AttachPool)
def attach_pool(ctx: HandlerContext, command: m.AttachPool) -> m.Answer:
    stats = ctx.storage.attach(ctx.pool(command.pool))
    ctx.attached(command.pool, True)
    return m.PoolStatsAnswer(stats=stats)


@handles(m.GetPoolStats)
def get_pool_stats(ctx: HandlerContext, command: m.GetPoolStats) -> m.Answer:
    return m.PoolStatsAnswer(stats=ctx.storage.stats(ctx.pool(command.pool)))


@handles(m.ResumeIoPaused)
def resume_io_paused(ctx: HandlerContext, command: m.ResumeIoPaused) -> m.Answer:
    return m.IoPausedAnswer(names=ctx.hypervisor.resume_io_paused())


@handles(m.DetachPool)
def detach_pool(ctx: HandlerContext, command: m.DetachPool) -> m.Answer:
    ctx.storage.detach(ctx.pool(command.pool))
    ctx.attached(command.pool, False)
    return m.Ack()


@handles(m.CheckSecondary)
def check_secondary(ctx: HandlerContext, command: m.CheckSecondary) -> m.Answer:
    return m.PoolStatsAnswer(stats=ctx.storage.check_secondary(command.url))


@handles(m.CreateVolume)
def create_volume(ctx: HandlerContext, command: m.CreateVolume) -> m.Answer:
    overlay = {"backing": command.backing} if command.backing else {}
    disk = ctx.storage.create_volume(ctx.pool(command.pool), command.name, command.size_bytes, fmt=command.format,
                                     **overlay)
    return m.VolumeAnswer(disk=disk)


@handles(m.CheckHeartbeat)
def check_heartbeat(ctx: HandlerContext, command: m.CheckHeartbeat) -> m.Answer:
    """Another host's heartbeat on a pool, and whether its guests' volumes are being written."""
    pool, storage = ctx.pool(command.pool), ctx.storage
    age = storage.heartbeat_age(pool, command.host)
    activity = False
    if command.volumes and command.window > 0:
        before = storage.volume_times(pool, command.volumes)
        time.sleep(command.window)
        after = storage.volume_times(pool, command.volumes)
        activity = any(after.get(name) != when for name, when in before.items())
    return m.HeartbeatAnswer(age=age, activity=activity)


@handles(m.CopyTemplate)
def copy_template(ctx: HandlerContext, command: m.CopyTemplate) -> m.Answer:
    return m.VolumeAnswer(disk=ctx.storage.copy_template(ctx.pool(command.pool), command.template, command.name))


@handles(m.DownloadTemplate)
def download_template(ctx: HandlerContext, command: m.DownloadTemplate) -> m.Answer:
    return ctx.downloads.start(command)


@handles(m.QueryDownload)
def query_download(ctx: HandlerContext, command: m.QueryDownload) -> m.Answer:
    return ctx.downloads.query(command.location)


@handles(m.DeleteTemplate)
def delete_template(ctx: HandlerContext, command: m.DeleteTemplate) -> m.Answer:
    ctx.downloads.delete(command.location)
    return m.Ack()


@handles(m.DeleteVolume)
def delete_volume(ctx: HandlerContext, command: m.DeleteVolume) -> m.Answer:
    ctx.storage.delete_volume(ctx.pool(command.pool), command.name)
    return m.Ack()


# -- dispatch -------------------------------------------------------------------------


class Dispatcher:
    """Runs each command from the engine through its handler on a bounded pool of worker threads.

    ``workers=0`` runs handlers on the event loop itself, for drivers that never
    block (the simulator), so thousands of simulated hosts need no threads.
    """

    def __init__(self, context: HandlerContext, workers: int = 5, host_label: str = ""):
        self.context = context
        self.host_label = host_label
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-worker") if workers > 0 else None
        )

    def run(self, command: m.Request, seq: int = 0) -> m.Answer:
        """Execute one command synchronously and return its answer (never raises for command failures)."""
        handler = HANDLERS.get(type(command))
        started = time.monotonic()
        log.info("host=%s seq=%s executing %s", self.host_label, seq, describe(command))
        try:
            if handler is None:
                raise UnsupportedCommand(f"this agent does not implement {command.type_name()}; upgrade the agent")
            answer = handler(self.context, command)
        except AgentError as exc:
            log.warning("host=%s seq=%s %s failed: %s: %s", self.host_label, seq, command.type_name(), exc.code, exc)
            return m.ErrorAnswer(code=exc.code, message=str(exc))
        except Exception:
            log.exception("host=%s seq=%s %s failed unexpectedly", self.host_label, seq, command.type_name())
            return m.ErrorAnswer(code="internal_error", message=f"{command.type_name()} failed; see the agent log")
        log.info(
            "host=%s seq=%s %s -> %s in %.0f ms", self.host_label, seq, command.type_name(),
            answer.type_name(), (time.monotonic() - started) * 1000,
        )
        return answer

    async def __call__(self, frame: Frame) -> m.Answer:
        command = frame.message
        assert isinstance(command, m.Request)
        if command.origin != m.ENGINE:
            return m.ErrorAnswer(code="unsupported_command", message=f"an agent does not serve {command.type_name()}")
        return await self.call(lambda: self.run(command, frame.seq))

    async def call(self, function: Callable[[], T]) -> T:
        """Run a (possibly blocking) driver call on the worker pool."""
        if self._executor is None:
            return function()
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.context.close()


def read_pools(path: Path) -> list[m.PoolSpec]:
    """The pools the agent lists in its pools file (none when there is no file yet)."""
    try:
        return [codec.decode(m.PoolSpec, item) for item in json.loads(path.read_text())]
    except FileNotFoundError:
        return []
