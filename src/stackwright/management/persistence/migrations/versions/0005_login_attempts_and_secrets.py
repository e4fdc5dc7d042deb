"""Users count wrong passwords (login lockout). Stored credentials are encrypted by
`stackwright-setup-databases`, which holds the key; the schema itself does not change for them.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("user") as batch:
        batch.add_column(sa.Column("login_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade():
    with op.batch_alter_table("user") as batch:
        batch.drop_column("login_attempts")
