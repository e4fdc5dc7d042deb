"""Image store details become text, to hold a Fernet token of their JSON (S3 keys are
credentials); `stackwright-setup-databases` encrypts the values already stored.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("image_store") as batch:
        batch.alter_column("details", type_=sa.Text(), existing_type=sa.JSON(), existing_nullable=False)


def downgrade():
    with op.batch_alter_table("image_store") as batch:
        batch.alter_column("details", type_=sa.JSON(), existing_type=sa.Text(), existing_nullable=False)
