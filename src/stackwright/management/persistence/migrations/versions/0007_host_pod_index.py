"""Hosts are found by pod (deletePod's check that a pod has no hosts, counts by pod) through an
index on (pod_id, removed) rather than by reading every host.

Revision ID: 0007_host_pod
Revises: 0006
"""
from alembic import op

revision = "0007_host_pod"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_host_pod_removed", "host", ["pod_id", "removed"])


def downgrade():
    op.drop_index("ix_host_pod_removed", table_name="host")
