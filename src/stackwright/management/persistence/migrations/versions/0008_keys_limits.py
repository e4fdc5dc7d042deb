"""SSH key pairs, resource limits and counts, and the user data and key pairs of guests.

Revision ID: 0008_keys_limits
Revises: 0007_host_pod
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_keys_limits"
down_revision = "0007_host_pod"
branch_labels = None
depends_on = None


def _entity_columns():
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("removed", sa.DateTime(), nullable=True),
    ]


def upgrade():
    op.create_table(
        "ssh_keypair", *_entity_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("account.id"), nullable=False),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domain.id"), nullable=False),
        sa.UniqueConstraint("account_id", "name"),
    )
    op.create_index("ix_ssh_keypair_account_id", "ssh_keypair", ["account_id"])
    for table in ("resource_limit", "resource_count"):
        value = sa.Column("max", sa.BigInteger(), nullable=False) if table == "resource_limit" else \
            sa.Column("count", sa.BigInteger(), nullable=False)
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("type", sa.Integer(), nullable=False),
            value,
            sa.Column("account_id", sa.Integer(), sa.ForeignKey("account.id"), nullable=True),
            sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domain.id"), nullable=True),
        )
        op.create_index("ix_%s_owner" % table, table, ["account_id", "domain_id", "type"])
    with op.batch_alter_table("vm_instance") as batch:
        batch.add_column(sa.Column("user_data", sa.Text(), nullable=True))
        batch.add_column(sa.Column("keypairs", sa.String(1024), nullable=True))


def downgrade():
    with op.batch_alter_table("vm_instance") as batch:
        batch.drop_column("keypairs")
        batch.drop_column("user_data")
    # A table's indexes go with it (MySQL refuses to drop one a foreign key still needs).
    for table in ("resource_count", "resource_limit", "ssh_keypair"):
        op.drop_table(table)
