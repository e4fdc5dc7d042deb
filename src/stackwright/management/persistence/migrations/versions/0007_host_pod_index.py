"""Hosts are found by pod (deletePod's check that a pod has no hosts, counts by pod) through an
index on (pod_id, removed) rather than by reading every host.

Revision ID: 0007_host_pod
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_host_pod"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_host_pod_removed"


def _has_index():
    return INDEX in {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("host")}


def upgrade():
    # A database whose recorded revision is older than its tables (restored from a dump, marked
    # by hand) may have the index already.
    if not _has_index():
        op.create_index(INDEX, "host", ["pod_id", "removed"])


def downgrade():
    if _has_index():
        if op.get_bind().dialect.name == "mysql":
            # InnoDB let the pod foreign key use this index and dropped the key's own: give the
            # key an index of its own again before this one goes.
            op.create_index("ix_host_pod_id", "host", ["pod_id"])
        op.drop_index(INDEX, table_name="host")
