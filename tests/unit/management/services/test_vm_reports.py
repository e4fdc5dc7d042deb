"""Guest reports from agents reach the VM service only when they change (the channel's
registrar), and are applied by the registration service in their own committed transaction. Uses its own module database."""

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from stackwright.management.persistence.models import (
    Account,
    Cluster,
    Domain,
    Host,
    Pod,
    ServiceOffering,
    Template,
    VmInstance,
    Zone,
)
from stackwright.management.agentlink.registrar import Registrar
from stackwright.management.services.configuration import GlobalSettings
from stackwright.management.services.registration import RegistrationService
from stackwright.protocol.messages import VmState
from tests.support.servers import registered_server

GUID = "host-guid-1"


@pytest.fixture
def vm_id(db):
    with db.transaction() as s:
        zone = Zone(name="z", network_type="Basic", details={})
        s.add(zone)
        s.flush()
        pod = Pod(name="p", zone_id=zone.id, gateway="10.0.0.1", netmask="255.255.255.0", start_ip="10.0.0.2",
                  end_ip="10.0.0.9")
        domain = Domain(name="ROOT", path="ROOT")
        s.add_all([pod, domain])
        s.flush()
        cluster = Cluster(name="c", pod_id=pod.id, zone_id=zone.id, hypervisor="KVM")
        account = Account(name="a", domain_id=domain.id)
        offering = ServiceOffering(name="o", cpu_number=1, cpu_speed=500, memory_mb=512)
        template = Template(name="t", format="QCOW2", hypervisor="KVM")
        s.add_all([cluster, account, offering, template])
        s.flush()
        host = Host(name="h", guid=GUID, zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id, hypervisor="KVM",
                    url="http://h", state="Up", details={})
        s.add(host)
        s.flush()
        vm = VmInstance(name="v", instance_name="i-1-1-VM", state="Running", zone_id=zone.id, host_id=host.id,
                        account_id=account.id, domain_id=domain.id, service_offering_id=offering.id,
                        template_id=template.id, hypervisor="KVM", cpu_number=1, cpu_speed=500, memory_mb=512,
                        mac_address="02:00:00:00:00:01", state_changed=dt.datetime(2020, 1, 1), details={})
        s.add(vm)
        s.flush()
        return vm.id


def state_of(db, vm_id):
    with db.transaction(readonly=True) as s:
        return s.execute(select(VmInstance.state).where(VmInstance.id == vm_id)).scalar_one()


def set_running(db, vm_id):
    with db.transaction() as s:
        vm = s.get(VmInstance, vm_id)
        vm.state, vm.host_id = "Running", s.execute(select(Host.id).where(Host.guid == GUID)).scalar_one()
        vm.state_changed = dt.datetime(2020, 1, 1)      # long before any report


def test_only_changed_reports_are_reconciled(db, vm_id):
    registrar = Registrar(RegistrationService(SimpleNamespace(db=db, settings=GlobalSettings(db),
                                                              cluster=registered_server(db))))

    async def report(vms, always=False):
        registrar.vms_reported(GUID, vms, always=always)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*pending)

    async def scenario():
        await report({}, always=True)                    # registration: the guest is gone
        assert state_of(db, vm_id) == "Stopped"
        set_running(db, vm_id)
        await report({})                                 # the same report again: nothing to do
        assert state_of(db, vm_id) == "Running"
        await report({"i-9-9-VM": VmState.RUNNING})      # a different report: reconciled
        assert state_of(db, vm_id) == "Stopped"
        set_running(db, vm_id)
        await report({"i-9-9-VM": VmState.RUNNING}, always=True)
        assert state_of(db, vm_id) == "Stopped"

    try:
        asyncio.run(scenario())
    finally:
        registrar.shutdown()
