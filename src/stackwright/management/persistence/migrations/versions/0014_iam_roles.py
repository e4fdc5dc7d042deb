"""Dynamic roles: the role and role_permission tables, the default roles and their rules,
and a role for every account (the default role of its type).

Revision ID: 0014_iam
Revises: 0013_console
"""
import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0014_iam"
down_revision = "0013_console"
branch_labels = None
depends_on = None

# CloudStack's default roles, with its ids. Root Admin (1) is allowed everything; the others
# fall back to the commands their type is authorised for where no rule matches.
DEFAULT_ROLES = [
    (1, "Root Admin", "Admin", "Default root admin role"),
    (2, "Resource Admin", "ResourceAdmin", "Default resource admin role"),
    (3, "Domain Admin", "DomainAdmin", "Default domain admin role"),
    (4, "User", "User", "Default user role"),
    (5, "Read-Only Admin - Default", "Admin", "Default read-only admin role"),
    (6, "Read-Only User - Default", "User", "Default read-only user role"),
]
READ_ONLY_RULES = [("list*", "allow"), ("get*", "allow"), ("queryAsyncJobResult", "allow"), ("*", "deny")]
# Account type -> its default role.
ROLE_OF_TYPE = {1: 1, 3: 2, 2: 3, 0: 4}


def upgrade():
    role = op.create_table(
        "role",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("removed", sa.DateTime(), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("role_type", sa.String(32), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    permission = op.create_table(
        "role_permission",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("role_id", sa.Integer(), sa.ForeignKey("role.id"), nullable=False, index=True),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("permission", sa.String(8), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.UniqueConstraint("role_id", "rule"),
    )
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    op.bulk_insert(role, [
        {"id": rid, "uuid": str(uuid.uuid4()), "created": now, "name": name, "role_type": kind,
         "description": text, "is_default": True, "version": 1}
        for rid, name, kind, text in DEFAULT_ROLES
    ])
    op.bulk_insert(permission, [
        {"uuid": str(uuid.uuid4()), "role_id": rid, "rule": rule, "permission": allowed,
         "description": None, "sort_order": order}
        for rid in (5, 6) for order, (rule, allowed) in enumerate(READ_ONLY_RULES)
    ])
    # A plain column (the engine keeps it pointing at a live role): adding a foreign key would
    # rebuild the account table on SQLite, which the users' references to it forbid.
    op.add_column("account", sa.Column("role_id", sa.Integer(), nullable=True))
    op.create_index("ix_account_role_id", "account", ["role_id"])
    account = sa.table("account", sa.column("account_type", sa.Integer()), sa.column("role_id", sa.Integer()))
    for kind, rid in ROLE_OF_TYPE.items():
        op.execute(account.update().where(account.c.account_type == kind).values(role_id=rid))


def downgrade():
    op.drop_index("ix_account_role_id", table_name="account")
    op.drop_column("account", "role_id")
    op.drop_table("role_permission")
    op.drop_table("role")
