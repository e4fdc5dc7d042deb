"""playbooks/host_maintenance.yml against a live engine.

Simulator hosts stand in for the inventory's KVM hosts: the playbook reaches a host only to
read its address when the inventory does not give one, and speaks to the engine about it
through the API. The order of the engine's maintenance jobs (listAsyncJobs), the resource
states listed while each host is in maintenance, and the hosts' states afterwards show
that the hosts went one at a time and came back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network
from tests.support.jobs import run_job

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK = REPO / "playbooks" / "host_maintenance.yml"
RUN_TIMEOUT = 240
SIM_HOST = "http://sim/vm/h%d?cpus=2&cpuspeed=1000&memory=" + str(2 * 1024 ** 3)
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"
PREPARE, CANCEL = "PrepareHostForMaintenanceCmd", "CancelHostMaintenanceCmd"

# Run against every host while it is in maintenance: what the engine lists at that moment.
WORK_TASKS = """\
- name: List the zone's hosts while this one is in maintenance
  stackwright.cloudstack.cs_host_info:
    zone: "{{ kvm_host_zone }}"
  delegate_to: "{{ groups['management'][0] }}"
  register: during

- name: Keep what the engine listed
  ansible.builtin.copy:
    content: "{{ during.hosts | to_json }}"
    dest: "{{ snapshot_dir }}/{{ inventory_hostname }}.json"
    mode: "0644"
"""


@pytest.fixture(scope="module")
def collections_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "stackwright"
    namespace.mkdir(parents=True)
    (namespace / "cloudstack").symlink_to(REPO, target_is_directory=True)
    return root


class Cloud:
    """An Enabled zone with a Simulator cluster of three hosts, a pool and the inventory naming them."""

    def __init__(self, api, engine, unique, workdir, collections):
        self.api, self.engine, self.workdir, self.collections = api, engine, workdir, collections
        zone = new_zone(api, unique)
        physical_network(api, zone, unique)
        self.zone = api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]
        pod = new_pod(api, self.zone, unique)
        cluster = new_cluster(api, pod, unique)
        hosts = [api.addHost(zoneid=self.zone["id"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                             url=SIM_HOST % i)["host"][0] for i in range(3)]
        api.createStoragePool(zoneid=self.zone["id"], podid=pod["id"], clusterid=cluster["id"], name="ps-" + unique,
                              url="nfs://127.0.0.1/export/primary-" + unique, capacitybytes=100 * 1024 ** 3)
        # Inventory name -> the host as the engine lists it; the inventory knows it by address.
        self.hosts = {"kvm%d" % (i + 1): host for i, host in enumerate(hosts)}
        self.snapshots = workdir / "snapshots"
        self.snapshots.mkdir()
        tasks = workdir / "work.yml"
        tasks.write_text(WORK_TASKS)
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        self.inventory = workdir / "inventory.json"
        self.inventory.write_text(json.dumps({"all": {"children": {
            "management": {"hosts": {"engine": local}},
            "kvm_hosts": {"hosts": {name: dict(local, kvm_host_address=host["ipaddress"],
                                               kvm_host_zone=self.zone["name"])
                                    for name, host in self.hosts.items()}},
        }}}))
        self.extra_vars = workdir / "extra.json"
        self.extra_vars.write_text(json.dumps({
            "management_server_api": {"url": engine.endpoint, "key": engine.api_key, "secret": engine.api_secret},
            "host_maintenance_tasks": str(tasks), "snapshot_dir": str(self.snapshots),
        }))

    def run(self, *args):
        for stale in self.snapshots.iterdir():
            stale.unlink()
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(self.collections),
            ANSIBLE_HOME=str(self.workdir / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "ansible-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_LOCALHOST_WARNING="0",
        )
        for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CLOUDSTACK_CONFIG"):
            env.pop(name, None)
        return subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), "-e", "@%s" % self.extra_vars, *args, str(PLAYBOOK)],
            cwd=str(self.workdir), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
        )

    def maintenance_jobs(self, seen=()):
        """(command, inventory name, job) of the maintenance jobs on our hosts not in `seen`, oldest first."""
        names = {host["id"]: name for name, host in self.hosts.items()}
        jobs = self.api.listAsyncJobs(listall=True).get("asyncjobs", [])
        return [(job["cmd"].rsplit(".", 1)[-1], names[job["jobinstanceid"]], job) for job in jobs
                if job.get("jobinstanceid") in names and job["jobid"] not in seen
                and job["cmd"].endswith((PREPARE, CANCEL))]

    def states(self):
        listed = self.api.listHosts(zoneid=self.zone["id"])["host"]
        by_id = {host["id"]: (host["resourcestate"], host["state"]) for host in listed}
        return {name: by_id[host["id"]] for name, host in self.hosts.items()}

    def snapshot(self, name):
        """Resource states the engine listed while `name` was in maintenance, by inventory name."""
        path = self.snapshots / ("%s.json" % name)
        if not path.exists():
            return None
        names = {host["id"]: name for name, host in self.hosts.items()}
        return {names[host["id"]]: host["resource_state"] for host in json.loads(path.read_text())}


@pytest.fixture
def cloud(api, engine, unique, tmp_path, collections_path):
    return Cloud(api, engine, unique, tmp_path, collections_path)


def succeeded(run):
    assert run.returncode == 0, "rc=%d\n%s\n%s" % (run.returncode, run.stdout[-8000:], run.stderr[-3000:])
    recaps = dict(re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=(\d+)", run.stdout, re.M))
    assert set(recaps) >= {"kvm1", "kvm2", "kvm3"} and set(recaps.values()) == {"0"}, run.stdout[-3000:]


def test_hosts_go_into_maintenance_one_at_a_time_and_come_back(cloud):
    seen = set()
    for _round in range(2):
        succeeded(cloud.run())
        jobs = cloud.maintenance_jobs(seen)
        seen.update(job["jobid"] for _cmd, _name, job in jobs)
        # Each host is taken out of maintenance before the next one goes in.
        assert [(cmd, name) for cmd, name, _job in jobs] == [
            (cmd, name) for name in ("kvm1", "kvm2", "kvm3") for cmd in (PREPARE, CANCEL)]
        for cmd, name, job in jobs:
            assert job["jobstatus"] == 1, job
            wanted = "Maintenance" if cmd == PREPARE else "Enabled"
            assert job["jobresult"]["host"]["resourcestate"] == wanted, (name, job)
        for name in ("kvm1", "kvm2", "kvm3"):
            during = cloud.snapshot(name)
            assert during == {other: "Maintenance" if other == name else "Enabled" for other in cloud.hosts}, name
        assert cloud.states() == {name: ("Enabled", "Up") for name in cloud.hosts}


def deployed(api, cloud, offering, host):
    template = api.listTemplates(templatefilter="executable", name=SIM_TEMPLATE,
                                 zoneid=cloud.zone["id"])["template"][0]
    _answer, job = run_job(api, "deployVirtualMachine", serviceofferingid=offering["id"], templateid=template["id"],
                           zoneid=cloud.zone["id"], hostid=cloud.hosts[host]["id"])
    assert job["jobstatus"] == 1, job
    return job["jobresult"]["virtualmachine"]


def offering_of(api, unique, memory):
    return api.createServiceOffering(name="m%d-%s" % (memory, unique), displaytext="%d MiB" % memory, cpunumber=1,
                                     cpuspeed=500, memory=memory)["serviceoffering"]


def destroyed(api, *vms):
    for vm in vms:
        _answer, job = run_job(api, "destroyVirtualMachine", id=vm["id"])
        assert job["jobstatus"] == 1, job


def test_running_guests_are_migrated_and_a_disabled_host_stays_disabled(cloud, api):
    small = api.listServiceOfferings(name="Small Instance")["serviceoffering"][0]
    vm = deployed(api, cloud, small, "kvm2")
    api.updateHost(id=cloud.hosts["kvm3"]["id"], allocationstate="Disable")
    succeeded(cloud.run())
    jobs = cloud.maintenance_jobs()
    assert [(cmd, name, job["jobstatus"]) for cmd, name, job in jobs] == [
        (cmd, name, 1) for name in ("kvm1", "kvm2", "kvm3") for cmd in (PREPARE, CANCEL)]
    # Moved off kvm2 to the only other Enabled host, still running.
    after = api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert (after["state"], after["hostid"]) == ("Running", cloud.hosts["kvm1"]["id"])
    assert cloud.states() == {"kvm1": ("Enabled", "Up"), "kvm2": ("Enabled", "Up"), "kvm3": ("Disabled", "Up")}
    destroyed(api, vm)


def test_guests_the_cluster_cannot_take_stop_the_run(cloud, api, unique):
    # Guests almost as large as a host: the rest of the cluster cannot take kvm1's; no host goes.
    big = offering_of(api, unique, 1600)
    guests = [deployed(api, cloud, big, name) for name in ("kvm1", "kvm2", "kvm3")]
    run = cloud.run()
    assert run.returncode != 0, run.stdout[-5000:]
    output = " ".join(run.stdout.split())
    assert ("host kvm1 (%s) holds guests of 1600 MiB and 500 MHz; the other Up and Enabled hosts of cluster "
            % cloud.hosts["kvm1"]["ipaddress"]) in output, output[-5000:]
    assert "have 896 MiB and 3000 MHz unallocated" in output and "no host was touched" in output
    assert cloud.maintenance_jobs() == []
    destroyed(api, *guests)

    # Room in the cluster as a whole, but on no single host: kvm1's guest cannot move.
    mid, large = offering_of(api, unique, 1000), offering_of(api, unique, 1200)
    stuck = deployed(api, cloud, large, "kvm1")
    others = {name: deployed(api, cloud, mid, name) for name in ("kvm2", "kvm3")}
    run = cloud.run()
    assert run.returncode != 0, run.stdout[-5000:]
    output = " ".join(run.stdout.split())
    assert ("host kvm1 (%s) did not go into maintenance: " % cloud.hosts["kvm1"]["ipaddress"]) in output, output[-5000:]
    assert "could not be migrated: %s: Unable to find a host" % stuck["instancename"] in output
    assert cloud.states()["kvm1"] == ("ErrorInPrepareForMaintenance", "Up")

    # With room on kvm2, the next run cancels the failed maintenance and moves every guest in turn.
    destroyed(api, others["kvm2"])
    succeeded(cloud.run())
    assert cloud.states() == {name: ("Enabled", "Up") for name in cloud.hosts}
    for vm in (stuck, others["kvm3"]):
        assert api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Running"
