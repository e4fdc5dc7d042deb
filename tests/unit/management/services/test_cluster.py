"""Several management servers on one database: registry, heartbeats, and who serves what."""

import datetime as dt
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from stackwright.management.persistence import crypto
from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import (
    Account,
    AsyncJob,
    Cluster,
    Domain,
    Host,
    ManagementServer,
    User,
    utcnow,
)
from stackwright.management.services.cluster import derive_msid
from stackwright.management.services.configuration import ConfigurationService, GlobalSettings
from stackwright.management.services.registration import RegistrationService
from tests.support.rows import zone_and_pod
from tests.support.servers import registered_server
from tests.unit.management.services.test_registration import request


@pytest.fixture
def db(tmp_path):
    crypto.install(crypto.ensure_key(str(tmp_path / "key"))[0])
    database = Database("sqlite:///%s" % (tmp_path / "cloud.db"))
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def servers(db):
    """Two servers on one database (SQLite here, as MariaDB would hold them)."""
    return (registered_server(db, "ms-a", "127.0.0.1:8080", sole=False),
            registered_server(db, "ms-b", "127.0.0.1:8081", sole=False))


@pytest.fixture
def place(db):
    """A zone, pod, KVM and Simulator clusters, and a user that owns jobs: their ids."""
    with db.transaction() as s:
        zone, pod = zone_and_pod(s, "z1", "p1")
        kvm = Cluster(name="kvm", pod_id=pod.id, zone_id=zone.id, hypervisor="KVM")
        sim = Cluster(name="sim", pod_id=pod.id, zone_id=zone.id, hypervisor="Simulator")
        domain = Domain(name="ROOT", path="ROOT")
        s.add_all([kvm, sim, domain])
        s.flush()
        account = Account(name="admin", account_type=1, domain_id=domain.id)
        s.add(account)
        s.flush()
        user = User(username="admin", password_hash="-", account_id=account.id)
        s.add(user)
        s.flush()
        return SimpleNamespace(zone=zone.id, pod=pod.id, kvm=kvm.id, sim=sim.id, user=user.id, account=account.id)


def add_host(db, place, name, owner, state="Up", simulator=False, external=False):
    with db.transaction() as s:
        s.add(Host(name=name, guid="guid-" + name, zone_id=place.zone, pod_id=place.pod,
                   cluster_id=place.sim if simulator else place.kvm,
                   hypervisor="Simulator" if simulator else "KVM", url="http://sim/%s" % name,
                   ip_address="10.1.0.%d" % (len(name) + 1), state=state, resource_state="Enabled",
                   details={"agent": "external"} if external else {},
                   mgmt_server_id=owner.me.msid if owner is not None else None))


def add_job(db, place, owner):
    with db.transaction() as s:
        job = AsyncJob(command="testSteps", cmd_class="x", params={}, user_id=place.user,
                       account_id=place.account, executing_msid=owner.me.msid)
        s.add(job)
        s.flush()
        return job.uuid


def silence(db, server, seconds=600):
    """`server` recorded its last heartbeat `seconds` ago (it was killed then)."""
    with db.transaction() as s:
        s.execute(update(ManagementServer).where(ManagementServer.msid == server.me.msid)
                  .values(last_update=utcnow() - dt.timedelta(seconds=seconds)))


def registration_of(db, server):
    return RegistrationService(SimpleNamespace(db=db, settings=GlobalSettings(db), cluster=server))


def test_servers_register_with_ids_stable_across_restarts_and_distinct_per_server(db, servers):
    a, b = servers
    assert a.me.msid == derive_msid("ms-a", "127.0.0.1:8080") != b.me.msid
    again = registered_server(db, "ms-a", "127.0.0.1:8080", sole=False)
    assert again.me.msid == a.me.msid and again.run_id != a.run_id
    with db.transaction(readonly=True) as s:
        rows = s.execute(select(ManagementServer.name, ManagementServer.state)).all()
    assert sorted(rows) == [("ms-a", "Up"), ("ms-b", "Up")]
    # The earlier run of ms-a is not this server any more: its heartbeat is refused.
    assert not a.heartbeat() and again.heartbeat()


def test_a_silent_peer_is_found_down_once_and_learns_it_at_its_next_heartbeat(db, servers):
    a, b = servers
    assert a.find_down(threshold=5) == []
    silence(db, b, seconds=6)
    assert a.find_down(threshold=60) == []          # within the threshold
    assert a.find_down(threshold=5) == [b.me.msid]
    assert a.find_down(threshold=5) == []           # already Down
    assert a.up() == {a.me.msid}
    assert not b.heartbeat()
    assert a.heartbeat()
    b.stopped()
    assert a.peer_address(b.me.msid) is None


def test_hosts_of_a_live_peer_are_never_judged_or_disconnected_here(db, servers, place):
    a, b = servers
    add_host(db, place, "ha", a)
    add_host(db, place, "hb", b)
    add_host(db, place, "old", None)          # of before several servers
    assert sorted(a.served_hosts()) == ["guid-ha", "guid-old"]
    reg_a = registration_of(db, a)
    assert reg_a.host_state("guid-hb", "Down") == "Up"         # b's: left alone
    assert reg_a.host_state("guid-ha", "Alert") == "Alert"
    reg_a.disconnect_all(["guid-hb", "guid-old"])
    with db.transaction(readonly=True) as s:
        states = dict(s.execute(select(Host.name, Host.state)).all())
    assert states == {"ha": "Alert", "hb": "Up", "old": "Disconnected"}


def test_an_agent_that_registers_here_moves_its_host_here(db, servers, place):
    a, b = servers
    add_host(db, place, "h1", b)
    reg_a = registration_of(db, a)
    [(_uuid, name)] = reg_a.register_many([request("guid-h1", "10.1.0.3")])
    assert name == "h1"
    # b hears of the old session's end afterwards: nothing changes.
    assert registration_of(db, b).host_state("guid-h1", "Disconnected") == "Up"
    assert a.host_owner("guid-h1") == a.me.msid


def test_a_down_servers_hosts_jobs_and_simulator_hosts_are_claimed_by_one_survivor(db, servers, place):
    a, b = servers
    c = registered_server(db, "ms-c", "127.0.0.1:8082", sole=False)
    add_host(db, place, "kb", b)
    add_host(db, place, "sb", b, simulator=True)
    add_host(db, place, "xb", b, simulator=True, external=True)
    add_host(db, place, "sa", a, simulator=True)
    jobs = [add_job(db, place, b) for _unused in range(3)]
    mine = add_job(db, place, a)
    # While b is Up, nothing of it is claimed.
    assert a.claim_jobs() == [] and a.claim_hosts() == [] and a.claim_simulated_hosts(orphans_only=True) == []
    silence(db, b)
    assert c.find_down(threshold=5) == [b.me.msid]
    assert a.claim_jobs(exclude={jobs[0]}) == jobs[1:]
    assert c.claim_jobs() == [jobs[0]]
    assert a.claim_jobs() == [] and c.claim_jobs() == []
    # Hosts with agents elsewhere (a KVM host, an external simulated agent) are watched by one.
    assert sorted(c.claim_hosts()) == ["guid-kb", "guid-xb"]
    assert a.claim_hosts() == []
    assert a.claim_simulated_hosts(orphans_only=True) == [("guid-sb", "http://sim/sb")]
    assert c.claim_simulated_hosts(orphans_only=True) == []
    assert sorted(a.claim_simulated_hosts()) == [("guid-sa", "http://sim/sa"), ("guid-sb", "http://sim/sb")]
    assert a.pending_jobs() == jobs[1:] + [mine]


def test_a_job_of_a_live_peer_is_not_run_here_and_one_of_a_down_peer_is_claimed(db, servers, place):
    a, b = servers
    job_uuid = add_job(db, place, b)
    with db.transaction() as s:
        job = s.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one()
        assert not a.may_run(s, job)
        assert job.executing_msid == b.me.msid
    silence(db, b)
    a.find_down(threshold=5)
    with db.transaction() as s:
        job = s.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one()
        assert a.may_run(s, job)
    assert b.claim_jobs() == []
    with db.transaction(readonly=True) as s:
        assert s.execute(select(AsyncJob.executing_msid)).scalar_one() == a.me.msid


def test_on_sqlite_a_server_under_a_new_identity_succeeds_the_previous_one(db, place):
    old = registered_server(db, "ms-a", "127.0.0.1:8080")
    job_uuid = add_job(db, place, old)
    new = registered_server(db, "ms-a", "127.0.0.1:9080")      # the API moved to another port
    assert new.up() == {new.me.msid}
    assert new.pending_jobs() == [job_uuid]


def test_recorded_state_is_up_until_a_peer_finds_the_server_down_or_another_run_takes_its_row(db, servers):
    a, b = servers
    assert (a.recorded_state(), b.recorded_state()) == ("Up", "Up")
    silence(db, b)
    a.find_down(threshold=5)
    assert b.recorded_state() == "Down"
    again = registered_server(db, "ms-b", "127.0.0.1:8081", sole=False)     # the same server, started again
    assert again.recorded_state() == "Up"
    assert b.recorded_state() is None


def test_global_settings_changed_through_one_server_reach_the_other_at_its_refresh(db):
    here, there = GlobalSettings(db), GlobalSettings(db)
    assert here.typed("default.page.size") == there.typed("default.page.size") == 500
    assert there.refresh() == []
    with db.transaction() as s:
        ConfigurationService(s, here).set_global("default.page.size", "20")
        ConfigurationService(s, here).set_global("ha.tag", "ha-hosts")
    assert here.typed("default.page.size") == 20
    assert there.typed("default.page.size") == 500          # cached until the refresh
    assert there.refresh() == ["default.page.size", "ha.tag"]
    assert (there.typed("default.page.size"), there.get("ha.tag")) == (20, "ha-hosts")
    with db.transaction() as s:
        ConfigurationService(s, here).reset("ha.tag")
    assert there.refresh() == ["ha.tag"] and there.get("ha.tag") is None
    assert there.refresh() == []
