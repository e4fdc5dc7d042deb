"""Each guest gets a VNC password of its own, held by the console proxy and stored encrypted
(a Fernet token); guests started before get one on their next start.

Revision ID: 0013_console
Revises: 0012_templates
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_console"
down_revision = "0012_templates"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("vm_instance") as batch:
        batch.add_column(sa.Column("vnc_password", sa.String(255), nullable=True))


def downgrade():
    with op.batch_alter_table("vm_instance") as batch:
        batch.drop_column("vnc_password")
