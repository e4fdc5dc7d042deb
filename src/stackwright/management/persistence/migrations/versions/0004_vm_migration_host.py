"""A migrating VM holds capacity on its destination as well: the destination's id.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("vm_instance") as batch:
        batch.add_column(sa.Column("migration_host_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_vm_instance_migration_host", "host", ["migration_host_id"], ["id"])
        batch.create_index("ix_vm_instance_migration_host_id", ["migration_host_id"])


def downgrade():
    with op.batch_alter_table("vm_instance") as batch:
        batch.drop_index("ix_vm_instance_migration_host_id")
        batch.drop_constraint("fk_vm_instance_migration_host", type_="foreignkey")
        batch.drop_column("migration_host_id")
