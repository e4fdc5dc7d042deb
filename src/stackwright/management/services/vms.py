"""Guests: deployment planning, the VM life cycle, and reconciliation with what hosts report.

A VM moves through CloudStack's states (cloudstack-api.md §8): deploy creates it Stopped
with an Allocated root volume; start plans a host and a primary pool, has the host's
agent create the root volume on the pool (CreateVolume) and boot the guest (StartVm);
stop, reboot and destroy go to the agent of the host the guest runs on.

Agent calls can take seconds (a guest ignoring ACPI takes the agent's whole grace period
to stop), so a job never holds a database transaction across one: each state change is
committed before the agent is asked (Starting, Stopping, Expunging) and again after it
answered. A job interrupted by a restart finds the VM in that transitional state and
resumes from it; the agent's commands are idempotent (starting a running guest or
stopping an absent one changes nothing), so nothing is started twice.

Reports of guest states (agent registration and pings) are reconciled by `reconcile()`,
which only ever corrects the database: the engine never starts or stops a guest because
of a report.
"""

import contextlib
import datetime as dt
import logging
import re
import secrets
import time

from sqlalchemy import func, select

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from ..errors import (
    ApiError,
    CloudRuntimeError,
    InsufficientCapacity,
    InvalidParameterValue,
    PermissionDenied,
    ResourceUnavailable,
)
from ..persistence.models import (
    Account,
    Host,
    ServiceOffering,
    StoragePool,
    VmInstance,
    Volume,
    Zone,
    utcnow,
)
from .placement import GiB, Demand, Planner, size_text

log = logging.getLogger(__name__)

STARTING, RUNNING, STOPPING, STOPPED = "Starting", "Running", "Stopping", "Stopped"
MIGRATING, DESTROYED, EXPUNGING, ERROR = "Migrating", "Destroyed", "Expunging", "Error"
# States in which a guest takes CPU and memory of its host (capacity counts them as used).
HOLDING_CAPACITY = (STARTING, RUNNING, STOPPING, MIGRATING)
# States a job is moving a VM through; reports never override them.
IN_TRANSITION = (STARTING, STOPPING, MIGRATING, EXPUNGING)

# Root volume states
ALLOCATED, CREATING, READY, DESTROY, EXPUNGED = "Allocated", "Creating", "Ready", "Destroy", "Expunged"

START_ATTEMPTS = 3          # hosts tried before a start gives up
AGENT_WAIT = 10.0           # seconds to wait for a host's agent to (re)connect
VERDICT_POLL = 5.0          # seconds between two looks at a host a guest may still run on
CLEANUP_TIMEOUT = 30.0
# How much older than its receipt a guest report may be (taken by the agent, then sent).
REPORT_GRACE = dt.timedelta(seconds=5)
TIMEOUTS = {
    m.CreateVolume: 300.0, m.StartVm: 300.0, m.StopVm: 180.0, m.RebootVm: 180.0, m.DeleteVolume: 120.0,
}
DEFAULT_GUEST_BRIDGE = "cloudbr0"
ROOT_DEVICE = "vda"

HOSTNAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
INVALID_NAME = (
    "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and "
    "the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" and "
    "can't start with digit"
)


def random_mac():
    """A locally administered unicast MAC in 02:00:xx:xx:xx:xx."""
    return "02:00:" + ":".join("%02x" % b for b in secrets.token_bytes(4))


def vm_label(vm):
    """How CloudStack names a VM in messages: VM[User|i-2-10-VM]."""
    return "VM[User|%s]" % vm.instance_name


def disk_of(volume):
    """The protocol DiskSpec of a volume the agent created."""
    disk = codec.decode(m.DiskSpec, volume.disk)
    disk.device = ROOT_DEVICE
    return disk


def pool_spec(pool):
    return m.PoolSpec(uuid=pool.uuid, url=pool.url, mode="auto")


class AgentAbsent(ResourceUnavailable):
    """The host's agent was not connected: the command was never sent."""


# --- the service ---------------------------------------------------------------------------------


class VmService:
    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session

    # --- lookups and ownership -------------------------------------------------------

    def root_volume(self, vm):
        return self.session.execute(
            select(Volume).where(Volume.vm_id == vm.id, Volume.volume_type == "ROOT", Volume.removed.is_(None))
        ).scalars().first()

    def check_access(self, vm):
        """Non-admin callers may only act on the VMs of their own account."""
        if vm.removed is not None:
            raise InvalidParameterValue("Unable to find virtual machine by id %s; it was expunged" % vm.uuid)
        if not self.ctx.is_root_admin and vm.account_id != self.ctx.account.id:
            raise PermissionDenied("Account %s does not have permission to operate with resource %s"
                                   % (self.ctx.account.name, vm.uuid))
        return vm

    def owner(self, account_name=None, domain=None):
        """The account a new VM belongs to: the caller's, or (admins) the one named."""
        caller = self.ctx.account
        if account_name is None:
            return caller
        domain_id = domain.id if domain is not None else caller.domain_id
        account = self.session.execute(
            select(Account).where(func.lower(Account.name) == account_name.lower(), Account.domain_id == domain_id,
                                  Account.removed.is_(None))
        ).scalars().first()
        if account is None:
            raise InvalidParameterValue("Unable to find account %s in domain %s" % (
                account_name, domain.uuid if domain is not None else caller.domain.uuid))
        if account.id != caller.id and not self.ctx.is_root_admin:
            raise PermissionDenied("Account %s does not have permission to deploy VMs for account %s"
                                   % (caller.name, account.name))
        return account

    def check_placement(self, zone, host=None, pod=None, cluster=None):
        """Where an admin asks a VM to go must be in its zone; other callers may not ask."""
        for row, what in ((host, "host"), (pod, "pod"), (cluster, "cluster")):
            if row is None:
                continue
            if not self.ctx.is_root_admin:
                raise PermissionDenied("Parameter %sid can only be specified by a Root Admin, permission denied" % what)
            if row.removed is not None or row.zone_id != zone.id:
                raise InvalidParameterValue("%s %s is not in zone %s" % (what.capitalize(), row.name, zone.name))

    # --- deployVirtualMachine (the part that runs in the request) ---------------------

    def create(self, *, zone, offering, template, owner, name=None, display_name=None, hypervisor=None,
               host=None, pod=None, cluster=None, details=None, root_disk_gb=None):
        """Validate a deployment and create the VM (Stopped) with its Allocated root volume."""
        catalog = self.ctx.catalog
        if zone.removed is not None:
            raise InvalidParameterValue("Unable to find zone by id %s; it was deleted" % zone.uuid)
        catalog.live_offering(offering)
        catalog.usable_template(template, zone)
        if hypervisor and hypervisor.lower() != template.hypervisor.lower():
            raise InvalidParameterValue(
                "Hypervisor passed to the deployVm call, is different from the hypervisor type of the template "
                "(%s is for %s)" % (template.name, template.hypervisor))
        self.check_placement(zone, host=host, pod=pod, cluster=cluster)
        cpu_number, cpu_speed, memory_mb = self._sizes(offering, details or {})
        if name is not None and not HOSTNAME.match(name):
            raise InvalidParameterValue(INVALID_NAME)
        if name is not None and self._name_taken(name, zone, owner):
            raise InvalidParameterValue(
                "A virtual machine with name %s already exists in zone %s for account %s; choose another name"
                % (name, zone.name, owner.name))
        size = template.size_bytes
        if root_disk_gb is not None:
            if root_disk_gb * GiB < template.size_bytes or root_disk_gb <= 0:
                raise InvalidParameterValue(
                    "Root disk size override (%s GB) is smaller than template size %s; pass rootdisksize >= %d"
                    % (root_disk_gb, size_text(template.size_bytes), -(-template.size_bytes // GiB)))
            size = root_disk_gb * GiB
        vm = VmInstance(
            name=name or "pending", display_name=display_name, instance_name="pending", state=STOPPED,
            zone_id=zone.id, account_id=owner.id, domain_id=owner.domain_id, service_offering_id=offering.id,
            template_id=template.id, hypervisor=template.hypervisor, cpu_number=cpu_number, cpu_speed=cpu_speed,
            memory_mb=memory_mb, ha_enabled=offering.offer_ha, mac_address=self._free_mac(), details={},
        )
        self.session.add(vm)
        self.session.flush()
        vm.instance_name = "i-%d-%d-VM" % (owner.id, vm.id)
        if name is None:
            vm.name = "VM-%s" % vm.uuid
        vm.display_name = display_name or vm.name
        self.session.add(Volume(
            name="ROOT-%d" % vm.id, vm_id=vm.id, zone_id=zone.id, account_id=owner.id, volume_type="ROOT",
            device_id=0, format=template.format.lower(), size_bytes=size, state=ALLOCATED,
        ))
        self.session.flush()
        self.ctx.event("VM.CREATE", "Created VM %s (%s) from template %s with offering %s"
                       % (vm.name, vm.instance_name, template.name, offering.name), vm.uuid)
        log.info("created VM %s (%s) in zone %s", vm.instance_name, vm.uuid, zone.name)
        return vm

    @staticmethod
    def _sizes(offering, details):
        if not offering.is_customized:
            return offering.cpu_number, offering.cpu_speed, offering.memory_mb
        wanted = {}
        for key in ("cpuNumber", "cpuSpeed", "memory"):
            raw = details.get(key)
            try:
                wanted[key] = int(raw)
            except (TypeError, ValueError):
                raise InvalidParameterValue(
                    "Need to specify custom parameter values cpu, cpu speed and memory when using custom "
                    "offering: pass details[0].cpuNumber, details[0].cpuSpeed and details[0].memory (MB)") from None
        if wanted["cpuNumber"] < 1 or wanted["cpuSpeed"] < 1 or wanted["memory"] < 32:
            raise InvalidParameterValue(
                "Invalid custom offering values: cpuNumber and cpuSpeed must be at least 1 and memory at least 32 MB")
        return wanted["cpuNumber"], wanted["cpuSpeed"], wanted["memory"]

    def _name_taken(self, name, zone, owner):
        return self.session.execute(
            select(VmInstance.id).where(func.lower(VmInstance.name) == name.lower(), VmInstance.zone_id == zone.id,
                                        VmInstance.account_id == owner.id, VmInstance.removed.is_(None),
                                        VmInstance.state.notin_((DESTROYED, EXPUNGING))).limit(1)
        ).first() is not None

    def _free_mac(self):
        for _attempt in range(16):
            mac = random_mac()
            taken = self.session.execute(
                select(VmInstance.id).where(VmInstance.mac_address == mac, VmInstance.removed.is_(None)).limit(1)
            ).first()
            if taken is None:
                return mac
        raise CloudRuntimeError("Unable to allocate a unique MAC address; retry the deployment")

    # --- start ------------------------------------------------------------------------

    def deploy(self, vm, *, start=True, host=None, pod=None, cluster=None):
        """The job part of deployVirtualMachine: start the VM, or leave it Stopped."""
        vm = self._reload(vm)
        if not start or vm.state in (RUNNING, ERROR, DESTROYED, EXPUNGING):
            return vm
        try:
            return self.start(vm, host=host, pod=pod, cluster=cluster, consider_last_host=False)
        except InsufficientCapacity:
            # CloudStack leaves a VM it could not deploy in Error; destroying it cleans up.
            vm = self._reload(vm)
            if vm.state == STOPPED:
                vm.state, vm.state_changed = ERROR, utcnow()
                self.ctx.event("VM.CREATE", "Failed to deploy VM %s" % vm.instance_name, vm.uuid, level="ERROR")
                self._commit()
            raise

    def start(self, vm, *, host=None, pod=None, cluster=None, consider_last_host=True):
        vm = self._reload(vm)
        if vm.state == RUNNING:
            return vm
        if vm.state not in (STOPPED, STARTING):
            raise CloudRuntimeError(
                "Unable to start VM %s: it is %s; only a Stopped VM can be started" % (vm.instance_name, vm.state))
        zone = self.session.get(Zone, vm.zone_id)
        volume = self.root_volume(vm)
        label = vm_label(vm)
        bridge = self._guest_bridge(zone)
        offering_tags = self._offering_tags(vm)
        avoid_hosts, avoid_pools, failures = set(), set(), []
        resume = self.session.get(Host, vm.host_id) if vm.state == STARTING and vm.host_id else None
        for _attempt in range(START_ATTEMPTS):
            resumed = resume is not None
            if resumed:
                target, pool = resume, self.session.get(StoragePool, volume.pool_id) if volume.pool_id else None
                resume = None
            else:
                placed = self.session.get(StoragePool, volume.pool_id) if volume.state == READY else None
                demand = Demand(vm.cpu_number, vm.cpu_speed, vm.memory_mb, vm.hypervisor, offering_tags,
                                volume_bytes=volume.size_bytes, pool=placed)
                plan = Planner(self.ctx).plan(
                    label, zone, demand, host=host, pod=pod, cluster=cluster,
                    last_host_id=vm.last_host_id if consider_last_host else None,
                    avoid_hosts=avoid_hosts, avoid_pools=avoid_pools, failures=failures)
                target, pool = plan.host, plan.pool
            if pool is None:
                raise CloudRuntimeError("Unable to start %s: its root volume has no storage pool" % label)
            with self._unstuck(vm, STOPPED, host_id=None):
                outcome = self._start_on(vm, volume, target, pool, bridge, resumed)
            if outcome is None:
                return vm
            failed_pool, reason = outcome
            failures.append("%s: %s" % (target.name, reason))
            avoid_hosts.add(target.id)
            if failed_pool:
                avoid_pools.add(pool.id)
        raise InsufficientCapacity("Unable to create a deployment for %s: %s" % (label, "; ".join(failures)),
                                   cserrorcode=4335)

    def _start_on(self, vm, volume, host, pool, bridge, resumed=False):
        """One attempt on `host`; None when the guest runs, else (pool at fault, reason).
        `resumed`: an earlier run of the job (before a restart) may have started it there."""
        recreate = volume.state == CREATING
        create = volume.state in (ALLOCATED, CREATING)
        vm.state, vm.host_id, vm.state_changed = STARTING, host.id, utcnow()
        if create:
            volume.pool_id, volume.state = pool.id, CREATING
        guid, host_name, host_ip = host.guid, host.name, host.ip_address
        bridges = set(filter(None, (host.details or {}).get("bridges", "").split(",")))
        target_pool = pool_spec(pool)
        self._commit()

        if create:
            if recreate:
                # An interrupted creation may have left an image behind; it never held data.
                self._try(guid, m.DeleteVolume(pool=target_pool, name=volume.uuid))
            try:
                answer = self._call(guid, host_name, m.CreateVolume(
                    pool=target_pool, name=volume.uuid, size_bytes=volume.size_bytes, format=volume.format))
            except ResourceUnavailable as e:
                vm = self._reload(vm)
                vm.state, vm.host_id = STOPPED, None
                volume.pool_id, volume.state = None, ALLOCATED
                self._commit()
                log.warning("could not create the root volume of %s on pool %s from host %s: %s",
                            vm.instance_name, pool.name, host_name, e.text)
                return True, "creating the root volume on storage pool %s failed: %s" % (pool.name, e.text)
            volume.state, volume.disk = READY, codec.encode_as(answer.disk, m.DiskSpec)
            self.ctx.event("VOLUME.CREATE", "Created root volume %s of %s on storage pool %s"
                           % (volume.name, vm.instance_name, pool.name), volume.uuid)
            self._commit()

        nics = []
        if bridge in bridges:
            nics.append(m.NicSpec(mac=vm.mac_address, bridge=bridge))
        spec = m.VmSpec(name=vm.instance_name, uuid=vm.uuid, vcpus=vm.cpu_number, cpu_mhz=vm.cpu_speed,
                        memory_mb=vm.memory_mb, disks=[disk_of(volume)], nics=nics,
                        vnc_listen=host_ip or "127.0.0.1")
        try:
            answer = self._call(guid, host_name, m.StartVm(spec=spec))
            if answer.state != m.VmState.RUNNING:
                raise ResourceUnavailable("host %s reports the guest %s after starting it" % (host_name, answer.state))
        except ResourceUnavailable as e:
            # Whatever the agent got done is undone; a start that timed out may still have booted it.
            undone = self._try(guid, m.StopVm(name=vm.instance_name, force=True))
            maybe_running = resumed or not isinstance(e, AgentAbsent)
            if not undone and maybe_running and not self._await_stopped(vm, host.id, guid, host_name):
                # Started anywhere else it could run twice, on two hosts, from the same disk.
                vm = self._reload(vm)
                vm.state, vm.host_id, vm.last_host_id, vm.state_changed = STOPPED, None, host.id, utcnow()
                text = ("Unable to start VM %s: host %s did not answer (%s) and may be running the guest; it is not "
                        "started on another host until the host's agent reconnects or the host is Down; start it "
                        "again then" % (vm.instance_name, host_name, e.text))
                self.ctx.event("VM.START", text, vm.uuid, level="ERROR")
                self._commit()
                raise CloudRuntimeError(text) from None
            vm = self._reload(vm)
            vm.state, vm.host_id, vm.state_changed = STOPPED, None, utcnow()
            self._commit()
            log.warning("could not start %s on host %s: %s", vm.instance_name, host_name, e.text)
            return False, "starting the guest failed: %s" % e.text

        vm = self._reload(vm)
        vm.state, vm.host_id, vm.last_host_id, vm.state_changed = RUNNING, host.id, host.id, utcnow()
        if not nics:
            self.ctx.event("VM.START", "VM %s started on host %s without a NIC: the host does not report bridge %s "
                           "(the zone's Guest traffic KVM label); create the bridge on the host or change the label"
                           % (vm.instance_name, host_name, bridge), vm.uuid, level="WARN")
        self.ctx.event("VM.START", "Started VM %s on host %s" % (vm.instance_name, host_name), vm.uuid)
        log.info("started %s (%s) on host %s", vm.instance_name, vm.uuid, host_name)
        return None

    def _guest_bridge(self, zone):
        """The bridge guests attach to: the KVM label of the zone's Guest traffic, else cloudbr0."""
        guest = self.ctx.networks.zone_traffic(zone).get("Guest")
        return (guest.kvm_label if guest is not None else None) or DEFAULT_GUEST_BRIDGE

    def _offering_tags(self, vm):
        offering = self.session.get(ServiceOffering, vm.service_offering_id)
        return [t for t in (offering.host_tags or "").split(",") if t] if offering else []

    # --- stop, reboot -------------------------------------------------------------------

    def stop(self, vm, forced=False):
        vm = self._reload(vm)
        if vm.state == STOPPED:
            return vm
        if vm.state not in (RUNNING, STOPPING):
            raise CloudRuntimeError(
                "Unable to stop VM %s: it is %s; only a Running VM can be stopped" % (vm.instance_name, vm.state))
        host = self.session.get(Host, vm.host_id) if vm.host_id else None
        vm.state, vm.state_changed = STOPPING, utcnow()
        self._commit()
        with self._unstuck(vm, RUNNING):
            return self._stopped(vm, host, forced)

    def _stopped(self, vm, host, forced):
        if host is not None:
            try:
                self._call(host.guid, host.name, m.StopVm(name=vm.instance_name, force=forced))
            except ResourceUnavailable as e:
                vm = self._reload(vm)
                if not forced:
                    vm.state = RUNNING
                    self._commit()
                    raise CloudRuntimeError(
                        "Failed to stop VM instance %s: %s; retry, or pass forced=true to mark it Stopped without "
                        "the host's confirmation" % (vm.instance_name, e.text)) from None
                self.ctx.event("VM.STOP", "Marked VM %s Stopped without confirmation from host %s: %s"
                               % (vm.instance_name, host.name, e.text), vm.uuid, level="WARN")
        vm = self._reload(vm)
        vm.state, vm.state_changed = STOPPED, utcnow()
        vm.last_host_id = vm.host_id or vm.last_host_id
        vm.host_id = None
        self.ctx.event("VM.STOP", "Stopped VM %s" % vm.instance_name, vm.uuid)
        log.info("stopped %s (%s)%s", vm.instance_name, vm.uuid, " (forced)" if forced else "")
        return vm

    def reboot(self, vm):
        vm = self._reload(vm)
        if vm.state != RUNNING or vm.host_id is None:
            raise CloudRuntimeError(
                "Failed to reboot vm instance: VM %s is %s; only a Running VM can be rebooted (start it instead)"
                % (vm.instance_name, vm.state))
        host = self.session.get(Host, vm.host_id)
        self._commit()
        try:
            self._call(host.guid, host.name, m.RebootVm(name=vm.instance_name))
        except ResourceUnavailable as e:
            raise CloudRuntimeError("Failed to reboot vm instance %s: %s" % (vm.instance_name, e.text)) from None
        vm = self._reload(vm)
        self.ctx.event("VM.REBOOT", "Rebooted VM %s on host %s" % (vm.instance_name, host.name), vm.uuid)
        return vm

    # --- destroy, expunge -------------------------------------------------------------

    def destroy(self, vm, expunge=False):
        vm = self._reload(vm)
        if vm.state in (STARTING, MIGRATING):
            raise CloudRuntimeError("Unable to destroy VM %s while it is %s; wait for its job to finish"
                                    % (vm.instance_name, vm.state))
        if vm.state in (RUNNING, STOPPING):
            vm = self.stop(vm)
        if vm.state != DESTROYED and vm.state != EXPUNGING:
            vm.state, vm.state_changed = DESTROYED, utcnow()
            volume = self.root_volume(vm)
            if volume is not None:
                volume.state = DESTROY if volume.state != ALLOCATED else volume.state
            self.ctx.event("VM.DESTROY", "Destroyed VM %s" % vm.instance_name, vm.uuid)
        if expunge:
            vm = self.expunge(vm)
        return vm

    def expunge(self, vm):
        """Delete the root volume from its pool, then the VM. The VM stays Destroyed when that fails."""
        volume = self.root_volume(vm)
        vm.state = EXPUNGING
        target = None
        if volume is not None and volume.pool_id is not None:
            pool = self.session.get(StoragePool, volume.pool_id)
            host = self._host_for_pool(pool, vm.last_host_id)
            if host is None:
                vm.state = DESTROYED
                self._commit()
                raise CloudRuntimeError(
                    "Failed to expunge VM %s: no Up host can reach storage pool %s to delete its root volume; "
                    "bring a host of the pool's cluster Up and retry" % (vm.instance_name, pool.name))
            target = (host.guid, host.name, pool_spec(pool), pool.name)
        self._commit()
        with self._unstuck(vm, DESTROYED):
            return self._expunged(vm, volume, target)

    def _expunged(self, vm, volume, target):
        if target is not None:
            guid, host_name, spec, pool_name = target
            try:
                self._call(guid, host_name, m.DeleteVolume(pool=spec, name=volume.uuid))
            except ResourceUnavailable as e:
                vm = self._reload(vm)
                vm.state = DESTROYED
                self._commit()
                raise CloudRuntimeError("Failed to expunge VM %s: could not delete its root volume from storage "
                                        "pool %s: %s" % (vm.instance_name, pool_name, e.text)) from None
        vm = self._reload(vm)
        now = utcnow()
        if volume is not None:
            volume = self.session.get(Volume, volume.id)
            volume.state, volume.removed = EXPUNGED, now
            self.ctx.event("VOLUME.DELETE", "Deleted root volume %s of %s" % (volume.name, vm.instance_name),
                           volume.uuid)
        vm.state, vm.removed, vm.host_id = EXPUNGING, now, None
        self.ctx.event("VM.EXPUNGE", "Expunged VM %s" % vm.instance_name, vm.uuid)
        log.info("expunged %s (%s)", vm.instance_name, vm.uuid)
        return vm

    def _host_for_pool(self, pool, preferred_id):
        if pool.scope == "ZONE":
            q = select(Host).where(Host.zone_id == pool.zone_id, Host.hypervisor == pool.hypervisor)
        else:
            q = select(Host).where(Host.cluster_id == pool.cluster_id)
        hosts = self.session.execute(
            q.where(Host.removed.is_(None), Host.state == "Up", Host.guid.is_not(None)).order_by(Host.id)
        ).unique().scalars().all()
        hosts.sort(key=lambda h: h.id != preferred_id)
        return hosts[0] if hosts else None

    # --- reconciliation with hypervisor reports ------------------------------------------

    def reconcile(self, host, reported, reported_at=None):
        """Correct the VM rows of `host` after its agent reported `reported` ({instance name: state}).

        A VM the database has Running on this host that the hypervisor does not run is
        Stopped; a Stopped VM the hypervisor runs is Running here. VMs a job is moving
        (Starting, Stopping...) are left to the job, and so are VMs whose state changed
        after (or just before) the report was received at `reported_at`: the report may
        predate that change. Nothing is started or stopped.
        Returns False when a VM was left alone, so the caller reconciles again later.
        """
        reported = {name: str(state) for name, state in reported.items()}
        newer_than = (reported_at or utcnow()) - REPORT_GRACE
        settled = True
        on_host = self.session.execute(
            select(VmInstance).where(VmInstance.host_id == host.id, VmInstance.removed.is_(None))
        ).scalars().all()
        seen = set()
        for vm in on_host:
            seen.add(vm.instance_name)
            state = reported.get(vm.instance_name)
            if vm.state in IN_TRANSITION or vm.state_changed > newer_than:
                settled = False
            elif vm.state == RUNNING and state in (None, STOPPED):
                vm.state, vm.last_host_id, vm.host_id, vm.state_changed = STOPPED, host.id, None, utcnow()
                self.ctx.event("VM.STOP", "VM %s stopped outside the engine: host %s reports it %s"
                               % (vm.instance_name, host.name, "absent" if state is None else state),
                               vm.uuid, level="WARN")
                log.warning("VM %s is no longer running on host %s; marked Stopped", vm.instance_name, host.name)
        running = [name for name, state in reported.items() if state == RUNNING and name not in seen]
        if running:
            elsewhere = self.session.execute(
                select(VmInstance).where(VmInstance.instance_name.in_(running), VmInstance.removed.is_(None))
            ).scalars().all()
            for vm in elsewhere:
                if vm.state in IN_TRANSITION or vm.state_changed > newer_than:
                    settled = False
                elif vm.state == STOPPED:
                    vm.state, vm.host_id, vm.last_host_id, vm.state_changed = RUNNING, host.id, host.id, utcnow()
                    self.ctx.event("VM.START", "VM %s found running on host %s: it was started outside the engine"
                                   % (vm.instance_name, host.name), vm.uuid, level="WARN")
                    log.warning("VM %s runs on host %s although it was Stopped; marked Running",
                                vm.instance_name, host.name)
                else:
                    log.warning("host %s runs a guest %s that the engine has %s%s; leaving it alone",
                                host.name, vm.instance_name, vm.state,
                                " on another host" if vm.state == RUNNING else "")
        self.session.flush()
        return settled

    # --- plumbing ---------------------------------------------------------------------

    def _reload(self, vm):
        """The VM row as committed now, locked for this transaction (MySQL)."""
        return self.session.execute(
            select(VmInstance).where(VmInstance.id == vm.id).with_for_update().execution_options(populate_existing=True)
        ).scalar_one()

    @contextlib.contextmanager
    def _unstuck(self, vm, state, **fields):
        """Put the VM back in `state` when something unexpected escapes a phase that left it in
        a transitional state; the expected failures (ApiError) are handled where they occur."""
        try:
            yield
        except ApiError:
            raise
        except Exception:
            try:
                self.session.rollback()
                row = self._reload(vm)
                if row.state in IN_TRANSITION:
                    row.state, row.state_changed = state, utcnow()
                    for name, value in fields.items():
                        setattr(row, name, value)
                    self._commit()
            except Exception:
                log.exception("could not return %s to %s", vm.instance_name, state)
            raise

    def _commit(self):
        # Commit what the job decided so far before the agent is asked anything: an agent
        # call must never hold the database's write lock (SQLite) or row locks (MySQL).
        self.session.commit()

    def _writers_admitted(self):
        """Other writers go while an agent works (see Database.writers_admitted)."""
        db = getattr(self.ctx.engine, "db", None)
        return db.writers_admitted() if db is not None else contextlib.nullcontext()

    def _call(self, guid, host_name, command):
        with self._writers_admitted():
            agents = self.ctx.engine.agent_channel(wait=AGENT_WAIT)
            if agents is None:
                raise AgentAbsent("the agent channel is not running on this management server")
            if not guid or not agents.registration_event(guid).wait(AGENT_WAIT):
                raise AgentAbsent("the agent of host %s is not connected" % host_name)
            return agents.call(guid, command, TIMEOUTS[type(command)])

    def _try(self, guid, command):
        """Best effort: a clean-up command whose failure changes nothing. True when it was done."""
        agents = self.ctx.engine.agents
        if agents is None or not guid:
            return False
        try:
            with self._writers_admitted():
                # A job resumed after a restart of the engine gets here before the host's agent
                # is back; without it the clean-up would be skipped and the next step fail on
                # what it should have cleaned up.
                agents.registration_event(guid).wait(AGENT_WAIT)
                agents.call(guid, command, CLEANUP_TIMEOUT)
            return True
        except ResourceUnavailable as e:
            log.info("clean-up %s on %s did not succeed: %s", type(command).__name__, guid, e.text)
            return False

    def _await_stopped(self, vm, host_id, guid, host_name):
        """After a start whose outcome on a host is unknown: True once the guest is known not
        to run there (the host's agent is back and stopped it, or the host is Down or gone),
        False when neither happened in the time the engine takes to judge a silent host."""
        log.warning("%s may be running on host %s, whose agent does not answer; waiting for the agent or for "
                    "the host to be Down before starting it elsewhere", vm.instance_name, host_name)
        deadline = time.monotonic() + self._verdict_time()
        stop = m.StopVm(name=vm.instance_name, force=True)
        while True:
            self._commit()      # a new transaction: the heartbeat monitor's verdict shows,
            state, removed = self.session.execute(
                select(Host.state, Host.removed).where(Host.id == host_id)).one()
            self._commit()      # and it is not held open (a write lock on SQLite) while waiting
            if removed is not None or state == "Down":
                log.warning("host %s is %s: %s may be started elsewhere", host_name,
                            "removed" if removed is not None else state, vm.instance_name)
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            agents = self.ctx.engine.agents
            with self._writers_admitted():
                back = agents is not None and agents.registration_event(guid).wait(min(VERDICT_POLL, remaining))
            if back:
                if self._try(guid, stop):
                    return True
                with self._writers_admitted():
                    time.sleep(min(VERDICT_POLL, max(0.0, deadline - time.monotonic())))

    def _verdict_time(self):
        """How long to wait for the heartbeat monitor to mark a silent host Down; without an
        agent channel there is no monitor, and no verdict to wait for."""
        agents = self.ctx.engine.agents
        return agents.down_within + AGENT_WAIT if agents is not None else 0.0
