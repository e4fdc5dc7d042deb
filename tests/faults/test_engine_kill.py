"""Fault: the engine is killed (SIGKILL) while 500 async jobs run, then started again.

Jobs are database rows run by a pool of workers: a job's change and its final status are
committed together, and VM jobs commit each step before they ask an agent and resume from
it after a restart. So after the kill and a restart every job must end (succeeded or
failed) within a bound, the change of every succeeded job must be in the database exactly
once, and no job that was final before the kill may run again.

The jobs are a mix whose effects can be checked afterwards: deployVirtualMachine on two
simulated hosts held by a separate process (their guests outlive the engine, as a real
host's do), createPhysicalNetwork, addTrafficType and updatePhysicalNetwork. The test runs
on SQLite and on MariaDB.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
import time
import uuid

import pytest
from sqlalchemy import select

from bench.report import table
from stackwright.agent.hypervisor.base import VmState
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.link import Backoff, Registration, tcp_connector
from stackwright.simulation.agent import SimulatedAgent
from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Event, VmInstance, Volume
from stackwright.protocol.pki import CertificateAuthority, client_context, write_file_atomic
from tests.support.engine import EngineProcess
from tests.support.jobs import job_ends
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow]

ROUNDS = 125                  # each round queues 4 jobs: 500 in all
SUBMITTERS = 4                # client threads queueing them
JOB_WORKERS = 4               # the engine's job workers (its default)
KILL_AFTER = 150              # jobs final when the engine is killed
BOOT_SECONDS = 1.0            # a guest's boot on the simulated hosts
SETTLE_TIMEOUT = 180.0        # restart until every job is final, on a loaded 2-core machine
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"
TiB = 1024 ** 4
BACKEND_NAMES = {"sqlite": "SQLite", "mysql": "MariaDB"}


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request, tmp_path):
    """An empty database for a private engine: an SQLite file, or a MariaDB schema."""
    wanted = os.environ.get("STACKWRIGHT_TEST_DB", "both").lower()
    if wanted not in ("both", request.param):
        pytest.skip("STACKWRIGHT_TEST_DB=%s" % wanted)
    if request.param == "sqlite":
        yield "sqlite:///%s" % (tmp_path / "engine" / "cloud.db")
        return
    server = request.getfixturevalue("mariadb_server")
    database = server.create_database(prefix="faultkill")
    try:
        yield database.url
    finally:
        server.drop_database(database)


class BootingDriver(SimulatorDriver):
    """The simulator driver with guests that take BOOT_SECONDS to boot, as real ones take a
    while: the job workers then fall behind the queue and the kill finds jobs in flight."""

    def start(self, spec):
        if self.list_vms().get(spec.name) is not VmState.RUNNING:
            time.sleep(BOOT_SECONDS)
        return super().start(spec)


class SimulatedHosts:
    """Simulated hosts on an event loop in a thread of the test process, joining a Simulator
    cluster by its id. They outlive the engine, as real hosts do: they keep their guests and
    reconnect by themselves when it comes back."""

    def __init__(self, engine, cluster_id, prefix, count=2):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="simulated-hosts", daemon=True)
        self.agents = []
        ca = CertificateAuthority.load(engine.workdir / "pki")
        for index in range(count):
            guid = "%s-%d" % (prefix, index)
            key_pem, cert_pem = ca.issue_client_cert(guid, days=1)
            key_file, cert_file = engine.workdir / ("%s.key" % guid), engine.workdir / ("%s.crt" % guid)
            write_file_atomic(key_file, key_pem, 0o600)
            write_file_atomic(cert_file, cert_pem, 0o600)
            driver = BootingDriver(hostname=guid, cpus=64, memory_mb=128 * 1024, private_ip="127.0.0.%d" % (10 + index))
            connector = tcp_connector(["127.0.0.1"], engine.agent_port, client_context(ca.cert_path, cert_file, key_file))
            self.agents.append(SimulatedAgent(Registration(guid=guid, cluster=cluster_id), connector, driver,
                                              backoff=Backoff(0.2, 2.0), workers=8))

    def start(self):
        self.thread.start()
        for agent in self.agents:
            asyncio.run_coroutine_threadsafe(agent.start(), self.loop).result(10)

    def boots(self):
        """{guest name: [(host guid, boots, state)]} over every host."""
        seen = collections.defaultdict(list)
        for agent in self.agents:
            for name, state in agent.driver.list_vms().items():
                seen[name].append((agent.link.registration.guid, agent.driver.boot_count(name), state))
        return seen

    def stop(self):
        if self.thread.is_alive():
            for agent in self.agents:
                try:
                    asyncio.run_coroutine_threadsafe(agent.stop(), self.loop).result(10)
                except Exception:  # stopping what is left; the loop goes next
                    pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class Queued:
    """The jobs queued by the test, with what each is expected to have done."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = {}          # job id -> (kind, round)
        self.networks = {}      # round -> physical network id
        self.vms = {}           # round -> VM id
        self.errors = []

    def add(self, jobid, kind, index):
        with self.lock:
            self.jobs[jobid] = (kind, index)


def queue_round(api, queued, zone_jobs, zone_vms, world, unique, index):
    network = api.createPhysicalNetwork(zoneid=zone_jobs["id"], name="net-%s-%d" % (unique, index))
    queued.networks[index] = network["id"]
    queued.add(network["jobid"], "createPhysicalNetwork", index)
    vm = api.deployVirtualMachine(zoneid=zone_vms["id"], templateid=world["template"],
                                  serviceofferingid=world["offering"], name="vm-%s-%d" % (unique, index))
    queued.vms[index] = vm["id"]
    queued.add(vm["jobid"], "deployVirtualMachine", index)
    traffic = api.addTrafficType(physicalnetworkid=network["id"], traffictype="Guest",
                                 kvmnetworklabel="br%d" % index)
    queued.add(traffic["jobid"], "addTrafficType", index)
    update = api.updatePhysicalNetwork(id=network["id"], vlan=str(1000 + index), state="Enabled")
    queued.add(update["jobid"], "updatePhysicalNetwork", index)


def all_jobs(api):
    return {j["jobid"]: j for j in api.listAsyncJobs(listall=True, fetch_list=True)}


def test_engine_killed_with_500_jobs_running(database_url, tmp_path, record_reliability):
    unique = uuid.uuid4().hex[:6]
    engine = EngineProcess(tmp_path / "engine", database_url, extra_args=["--job-workers", str(JOB_WORKERS)])
    engine.backend = "sqlite" if database_url.startswith("sqlite") else "mysql"
    hosts = None
    try:
        engine.start()
        api = engine.client()
        # VMs go to an enabled Basic zone with one Simulator cluster; the physical networks
        # the jobs create go to a zone of their own, so the deployments never look at them.
        zone_vms = new_zone(api, unique)
        physical_network(api, zone_vms, unique)
        zone_vms = api.updateZone(id=zone_vms["id"], allocationstate="Enabled")["zone"]
        pod = new_pod(api, zone_vms, unique)
        cluster = new_cluster(api, pod, unique)
        api.createStoragePool(zoneid=zone_vms["id"], podid=pod["id"], clusterid=cluster["id"],
                              name="ps-%s" % unique, url="nfs://127.0.0.1/export/fault-kill-%s" % unique,
                              capacitybytes=4 * TiB)
        zone_jobs = new_zone(api, unique, networktype="Advanced")
        hosts = SimulatedHosts(engine, cluster["id"], "kill-%s" % unique)
        hosts.start()
        wait_for("two simulated hosts Up", lambda: len([
            h for h in api.listHosts(clusterid=cluster["id"]).get("host", []) if h["state"] == "Up"]) == 2, 60, interval=0.5)
        host_ids = {h["id"] for h in api.listHosts(clusterid=cluster["id"])["host"]}
        world = {
            "template": api.listTemplates(templatefilter="executable", name=SIM_TEMPLATE,
                                          zoneid=zone_vms["id"])["template"][0]["id"],
            "offering": api.listServiceOfferings(name="Small Instance")["serviceoffering"][0]["id"],
        }

        # Queue 500 jobs from a few client threads.
        queued = Queued()
        started = time.monotonic()

        def submit(rounds):
            client = engine.client()
            try:
                for index in rounds:
                    queue_round(client, queued, zone_jobs, zone_vms, world, unique, index)
            except Exception as exc:  # reported by the assertion below
                queued.errors.append(repr(exc))

        threads = [threading.Thread(target=submit, args=(range(k, ROUNDS, SUBMITTERS),)) for k in range(SUBMITTERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert not queued.errors, queued.errors[:3]
        assert len(queued.jobs) == 4 * ROUNDS
        queue_seconds = time.monotonic() - started
        # Kill once a good part of the jobs is final, with the rest queued or in flight.
        before = {}

        def some_final():
            before.clear()
            before.update(all_jobs(api))
            return sum(1 for jobid in queued.jobs if before.get(jobid, {}).get("jobstatus", 0) != 0) >= KILL_AFTER

        wait_for("%d jobs final before the kill" % KILL_AFTER, some_final, 120, interval=0.5)
        engine.kill()
        killed = time.monotonic()
        final_before = {jobid: job for jobid, job in before.items() if job["jobstatus"] != 0}
        pending_at_kill = sum(1 for jobid in queued.jobs if before.get(jobid, {}).get("jobstatus", 0) == 0)
        assert pending_at_kill > 0, (
            "every job had finished before the kill: queueing them took %.1f s, as long as running them, so "
            "requests that queue a job wait for the jobs that run" % queue_seconds)

        engine.start()
        api = engine.client()
        back = time.monotonic()
        jobs = {}

        def settled():
            jobs.update(all_jobs(api))
            return all(jobs.get(jobid, {}).get("jobstatus", 0) != 0 for jobid in queued.jobs)

        try:
            wait_for("every job final after the restart", settled, SETTLE_TIMEOUT, interval=1.0)
        except AssertionError as exc:
            pending = [jobid for jobid in queued.jobs if jobs.get(jobid, {}).get("jobstatus", 0) == 0]
            raise AssertionError("%s\n%d jobs still pending, e.g. %s" % (exc, len(pending), pending[:5])) from None
        settle_seconds = time.monotonic() - back

        # Final before the kill: never run again, so nothing about them changed.
        for jobid, job in final_before.items():
            after = jobs[jobid]
            assert (after["jobstatus"], after.get("completed"), after.get("jobresult")) == (
                job["jobstatus"], job.get("completed"), job.get("jobresult")), jobid
        # The log of both lives of the engine: a job reaches its end at most once.
        ends = job_ends(engine.log_file)
        repeated = {jobid: n for jobid, n in ends.items() if n > 1 and jobid in queued.jobs}
        assert not repeated, "jobs that ended more than once: %s" % repeated
        resumed = re.findall(r"resuming (\d+) pending async job", engine.log_file.read_text(errors="replace"))

        outcomes = collections.Counter()
        failures = collections.Counter()
        for jobid, (kind, _index) in queued.jobs.items():
            job = jobs[jobid]
            outcomes[kind, job["jobstatus"]] += 1
            if job["jobstatus"] == 2:
                failures[kind, job["jobresult"]["errortext"][:120]] += 1
        # The hosts' agents are back within seconds of the restart: the kill alone fails no job.
        assert not failures, failures

        check_networks(api, queued, jobs, zone_jobs)
        deployed = check_vms(api, engine, hosts, queued, jobs, zone_vms, host_ids)

        rows = [
            ["jobs queued (4 kinds x %d)" % ROUNDS, len(queued.jobs)],
            ["time to queue them", "%.1f s" % queue_seconds],
            ["jobs not final when the engine was killed", pending_at_kill],
            ["pending jobs the restarted engine resumed", resumed[-1] if resumed else 0],
            ["restart (SIGKILL to API answering)", "%.1f s" % (back - killed)],
            ["restart to every job final", "%.1f s" % settle_seconds],
            ["succeeded", sum(n for (_k, status), n in outcomes.items() if status == 1)],
            ["failed", sum(n for (_k, status), n in outcomes.items() if status == 2)],
            ["VMs Running, each started exactly once", deployed],
            ["jobs final before the kill that changed afterwards", 0],
            ["jobs that ended twice (engine log)", 0],
        ]
        body = "Database: %s; %d job workers; the simulated hosts' guests take %.0f s to boot.\n\n%s" % (
            BACKEND_NAMES[engine.backend], JOB_WORKERS, BOOT_SECONDS, table(["measure", "value"], rows))
        record_reliability("Engine killed with 500 jobs running (%s)" % BACKEND_NAMES[engine.backend], body)
    finally:
        if hosts is not None:
            hosts.stop()
        engine.kill()


def check_networks(api, queued, jobs, zone_jobs):
    """Each network exists once, with its one Guest traffic type and its update applied."""
    networks = {n["name"]: n for n in api.listPhysicalNetworks(zoneid=zone_jobs["id"], fetch_list=True)}
    assert len(networks) == len(api.listPhysicalNetworks(zoneid=zone_jobs["id"], fetch_list=True))
    for jobid, (kind, index) in queued.jobs.items():
        job = jobs[jobid]
        network_id = queued.networks[index]
        if kind == "createPhysicalNetwork":
            named = [n for n in networks.values() if n["id"] == network_id]
            assert len(named) == 1, (index, named)
            assert job["jobresult"]["physicalnetwork"]["id"] == network_id
        elif kind == "addTrafficType":
            types = api.listTrafficTypes(physicalnetworkid=network_id).get("traffictype", [])
            assert [(t["traffictype"], t.get("kvmnetworklabel")) for t in types] == [("Guest", "br%d" % index)], types
            assert job["jobresult"]["traffictype"]["id"] == types[0]["id"]
        elif kind == "updatePhysicalNetwork":
            network = [n for n in networks.values() if n["id"] == network_id][0]
            assert (network.get("vlan"), network["state"]) == (str(1000 + index), "Enabled"), network


def check_vms(api, engine, hosts, queued, jobs, zone_vms, host_ids):
    """A succeeded deployment: one VM, Running on one of the hosts, one Ready root volume,
    started and its volume created exactly once, its guest booted once on one host.
    A failed one: nothing left running."""
    vms = {vm["id"]: vm for vm in api.listVirtualMachines(zoneid=zone_vms["id"], listall=True, fetch_list=True)}
    assert len(vms) == ROUNDS
    db = Database(engine.db_url)
    try:
        with db.transaction(readonly=True) as s:
            events = collections.Counter(
                (e.resource_uuid, e.type, e.description.split(" ", 1)[0])
                for e in s.execute(select(Event).where(Event.type.in_(("VM.START", "VOLUME.CREATE")))).scalars())
            volumes = collections.defaultdict(list)
            for vm_uuid, volume in s.execute(
                    select(VmInstance.uuid, Volume).join(Volume, Volume.vm_id == VmInstance.id)
                    .where(Volume.removed.is_(None))).all():
                volumes[vm_uuid].append(volume)
    finally:
        db.dispose()
    host_guids = {h["id"]: h["name"] for h in api.listHosts(zoneid=zone_vms["id"])["host"]}
    guests = hosts.boots()
    running = 0
    for jobid, (kind, index) in queued.jobs.items():
        if kind != "deployVirtualMachine":
            continue
        vm_id = queued.vms[index]
        vm, job = vms[vm_id], jobs[jobid]
        [root] = volumes[vm_id]
        if job["jobstatus"] == 1:
            assert job["jobresult"]["virtualmachine"]["id"] == vm_id
            assert (vm["state"], vm.get("hostid") in host_ids) == ("Running", True), vm
            assert (root.state, root.pool_id is not None) == ("Ready", True), (vm_id, root.state)
            assert events[vm_id, "VM.START", "Started"] == 1, (vm_id, events[vm_id, "VM.START", "Started"])
            assert events[root.uuid, "VOLUME.CREATE", "Created"] == 1, vm_id
            assert guests[vm["instancename"]] == [(host_guids[vm["hostid"]], 1, VmState.RUNNING)], (
                vm["instancename"], guests[vm["instancename"]])
            running += 1
        else:
            assert vm["state"] != "Running" and events[vm_id, "VM.START", "Started"] == 0, (vm, job["jobresult"])
            assert all(state is not VmState.RUNNING for _h, _b, state in guests[vm["instancename"]]), vm
    return running
