"""Several management servers on one database: the server registry (mshost), the shared
certificate authority, API counters shared by every server, the server running each job,
and an index on the server holding each host's agent.

Revision ID: 0011_mgmt_servers
Revises: 0010_ha
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_mgmt_servers"
down_revision = "0010_ha"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "mshost",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), unique=True),
        sa.Column("created", sa.DateTime()),
        sa.Column("removed", sa.DateTime(), nullable=True),
        sa.Column("msid", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("service_ip", sa.String(64), nullable=False),
        sa.Column("service_port", sa.Integer(), nullable=False),
        sa.Column("agent_port", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_update", sa.DateTime(), nullable=False),
        sa.Column("last_start", sa.DateTime(), nullable=True),
        sa.Column("last_stop", sa.DateTime(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_table(
        "management_ca",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("key_pem", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime()),
    )
    op.create_table(
        "api_counter",
        sa.Column("account_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("window_start", sa.Double(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    with op.batch_alter_table("async_job") as batch:
        batch.add_column(sa.Column("executing_msid", sa.BigInteger(), nullable=True))
        batch.create_index("ix_async_job_executing_msid", ["executing_msid"])
    with op.batch_alter_table("host") as batch:
        batch.create_index("ix_host_mgmt_server_id", ["mgmt_server_id"])


def downgrade():
    with op.batch_alter_table("host") as batch:
        batch.drop_index("ix_host_mgmt_server_id")
    with op.batch_alter_table("async_job") as batch:
        batch.drop_index("ix_async_job_executing_msid")
        batch.drop_column("executing_msid")
    op.drop_table("api_counter")
    op.drop_table("management_ca")
    op.drop_table("mshost")
