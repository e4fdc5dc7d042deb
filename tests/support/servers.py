"""Management servers on a test's database (services/cluster.py), registered as an engine's start does."""

from __future__ import annotations

from sqlalchemy import select

from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import ManagementServer
from stackwright.management.services.cluster import ClusterService, ServerIdentity


def registered_server(db, name="ms-a", api_address="127.0.0.1:8080", service_port=9090, sole=None):
    """A `ClusterService` for a server called `name`, registered Up on `db` (`sole`: whether it is
    the database's only server, by default when the database is SQLite)."""
    cluster = ClusterService(db, ServerIdentity.of(api_address, "127.0.0.1", service_port, name=name), sole=sole)
    cluster.register()
    return cluster


def server_of(engine, column=ManagementServer.uuid):
    """A column of the mshost row of a running `EngineProcess` (found by its agent port): by
    default its `listManagementServers` id."""
    db = Database(engine.db_url)
    try:
        with db.transaction(readonly=True) as s:
            return s.execute(select(column).where(ManagementServer.agent_port == engine.agent_port)).scalar_one()
    finally:
        db.dispose()
