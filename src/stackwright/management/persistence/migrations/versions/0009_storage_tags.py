"""Disk offerings, storage tags on service offerings, and a data volume's offering.

Revision ID: 0009_storage_tags
Revises: 0008_keys_limits
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_storage_tags"
down_revision = "0008_keys_limits"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "disk_offering",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("display_text", sa.String(length=4096), nullable=True),
        sa.Column("disk_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("customized", sa.Boolean(), nullable=False),
        sa.Column("tags", sa.String(length=4096), nullable=True),
        sa.Column("storage_type", sa.String(length=16), nullable=False),
        sa.Column("provisioning_type", sa.String(length=16), nullable=False),
        sa.Column("customized_iops", sa.Boolean(), nullable=True),
        sa.Column("min_iops", sa.BigInteger(), nullable=True),
        sa.Column("max_iops", sa.BigInteger(), nullable=True),
        sa.Column("display_offering", sa.Boolean(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        sa.Column("sort_key", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("removed", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["domain_id"], ["domain.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid"),
    )
    with op.batch_alter_table("service_offering") as batch:
        batch.add_column(sa.Column("storage_tags", sa.String(length=4096), nullable=True))
    with op.batch_alter_table("volume") as batch:
        batch.add_column(sa.Column("disk_offering_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_volume_disk_offering", "disk_offering", ["disk_offering_id"], ["id"])


def downgrade():
    with op.batch_alter_table("volume") as batch:
        batch.drop_constraint("fk_volume_disk_offering", type_="foreignkey")
        batch.drop_column("disk_offering_id")
    with op.batch_alter_table("service_offering") as batch:
        batch.drop_column("storage_tags")
    op.drop_table("disk_offering")
