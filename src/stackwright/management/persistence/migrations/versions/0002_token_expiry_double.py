"""Enrollment token expiry as DOUBLE.

MySQL's FLOAT is single precision: at today's epoch it rounds to 128 seconds, so a token
could be expired the moment it was issued. SQLite stores REAL in double precision already.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("enrollment_token", "expires_at", type_=sa.Double(), existing_nullable=False)


def downgrade():
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("enrollment_token", "expires_at", type_=sa.Float(), existing_nullable=False)
