"""Events say what kind of resource they are about and can be archived; alerts get a table
of their own (listAlerts, archiveAlerts, deleteAlerts, and mail to alert.email.addresses).

Revision ID: 0010_ha
Revises: 0009_storage_tags
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_ha"
down_revision = "0009_storage_tags"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("event") as batch:
        batch.add_column(sa.Column("resource_type", sa.String(64), nullable=True))
        batch.add_column(sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_event_archived_created", ["archived", "created"])
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("removed", sa.DateTime(), nullable=True),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("zone_id", sa.Integer(), sa.ForeignKey("zone.id"), nullable=True),
        sa.Column("pod_id", sa.Integer(), sa.ForeignKey("pod.id"), nullable=True),
        sa.Column("cluster_id", sa.Integer(), sa.ForeignKey("cluster.id"), nullable=True),
        sa.Column("resource_uuid", sa.String(36), nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("mailed", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_alert_archived_created", "alert", ["archived", "created"])


def downgrade():
    op.drop_index("ix_alert_archived_created", table_name="alert")
    op.drop_table("alert")
    with op.batch_alter_table("event") as batch:
        batch.drop_index("ix_event_archived_created")
        batch.drop_column("archived")
        batch.drop_column("resource_type")
