"""Fixtures for service tests: a migrated SQLite database per test module and a rolled-back context."""

from types import SimpleNamespace

import pytest

from tests.support.gateway import RecordingGateway
from stackwright.management.context import Context
from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Pod, Zone
from stackwright.management.services.configuration import GlobalSettings


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    database = Database("sqlite:///%s" % (tmp_path_factory.mktemp("services") / "cloud.db"))
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def ctx(db):
    """A context on a transaction that is rolled back after the test."""
    session = db.session()
    try:
        engine = SimpleNamespace(settings=GlobalSettings(db), gateway=RecordingGateway())
        yield Context(engine, session, user=None)
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
