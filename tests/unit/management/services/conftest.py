"""Fixtures for service tests: a migrated SQLite database per test module and a rolled-back context."""

from types import SimpleNamespace

import pytest

from tests.support.gateway import RecordingGateway
from stackwright.management.context import Context
from stackwright.management.engine import capacity_checker
from stackwright.management.persistence import crypto
from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Account, Domain, Pod, User, Zone
from stackwright.management.services.accounts import ROOT_ADMIN
from stackwright.management.services.configuration import GlobalSettings
from tests.support.servers import registered_server


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("services")
    # The key of the stored credentials, as stackwright-setup-databases writes it.
    crypto.install(crypto.ensure_key(str(workdir / "key"))[0])
    database = Database("sqlite:///%s" % (workdir / "cloud.db"))
    database.upgrade()
    yield database
    database.dispose()


def engine_for(db, submitted=None):
    """What services reach of the engine: settings, the agent gateway, the job queue."""
    uuids = submitted if submitted is not None else []
    queue = SimpleNamespace(submit=lambda job_uuid, command=None: uuids.append(job_uuid))
    engine = SimpleNamespace(db=db, settings=GlobalSettings(db), gateway=RecordingGateway(), jobs=queue,
                             cluster=registered_server(db))
    engine.capacity_checker = capacity_checker(engine)      # not started: tests check when they want
    return engine


def root_admin(session):
    """A root admin of the ROOT domain, as stackwright-setup-databases creates one."""
    domain = Domain(name="ROOT", path="ROOT")
    session.add(domain)
    session.flush()
    account = Account(name="admin", account_type=ROOT_ADMIN, domain_id=domain.id)
    session.add(account)
    session.flush()
    user = User(username="admin", password_hash="-", account_id=account.id)
    session.add(user)
    session.flush()
    return user


@pytest.fixture
def submitted():
    """Uuids of the jobs the services handed to the job queue."""
    return []


@pytest.fixture
def ctx(db, submitted):
    """A root admin's context on a transaction that is rolled back after the test."""
    session = db.session()
    try:
        yield Context(engine_for(db, submitted), session, user=root_admin(session))
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def zone_pod(ctx):
    """A zone with one pod, as the hierarchy service leaves them."""
    zone = Zone(name="z", network_type="Advanced", details={})
    ctx.session.add(zone)
    ctx.session.flush()
    pod = Pod(name="p", zone_id=zone.id, gateway="10.0.0.1", netmask="255.255.255.0",
              start_ip="10.0.0.10", end_ip="10.0.0.20")
    ctx.session.add(pod)
    ctx.session.flush()
    return zone, pod


@pytest.fixture
def gateway():
    """A recording agent gateway over in-process agents."""
    return RecordingGateway()


@pytest.fixture
def jobs(db, gateway):
    """Async jobs run the way the engine's workers run them (job_harness.JobHarness)."""
    from tests.unit.management.services.job_harness import JobHarness

    return JobHarness(db, gateway)


@pytest.fixture
def job_ctx(db, jobs):
    """A root admin's context whose rows the test commits: jobs run in transactions of their own."""
    session = db.session()
    try:
        yield Context(jobs.engine, session, user=root_admin(session))
    finally:
        session.rollback()
        session.close()
