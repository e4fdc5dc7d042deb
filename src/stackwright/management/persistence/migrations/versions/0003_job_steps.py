"""Jobs record their steps: the index of the next step and the outcomes so far.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("async_job") as batch:
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("step_results", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("async_job") as batch:
        batch.drop_column("step_results")
        batch.drop_column("step")
