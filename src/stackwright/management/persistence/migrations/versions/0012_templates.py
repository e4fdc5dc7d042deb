"""Templates and ISOs through secondary storage: the OS catalogue (guest_os_category, guest_os),
each template's copies on image stores (template_store_ref) and on primary pools
(template_spool_ref), and the template a root volume is an overlay on.

Revision ID: 0012_templates
Revises: 0011_mgmt_servers
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_templates"
down_revision = "0011_mgmt_servers"
branch_labels = None
depends_on = None


def _entity():
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("removed", sa.DateTime(), nullable=True),
    ]


def upgrade():
    op.create_table("guest_os_category", *_entity(), sa.Column("name", sa.String(255), nullable=False, unique=True))
    op.create_table(
        "guest_os", *_entity(),
        sa.Column("category_id", sa.Integer(), sa.ForeignKey("guest_os_category.id"), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False, unique=True),
        sa.Column("is_user_defined", sa.Boolean(), nullable=False),
    )
    with op.batch_alter_table("vm_template") as batch:
        batch.add_column(sa.Column("os_type_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("bootable", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("physical_size", sa.BigInteger(), nullable=False, server_default="0"))
        batch.create_foreign_key("fk_vm_template_os_type", "guest_os", ["os_type_id"], ["id"])
    with op.batch_alter_table("volume") as batch:
        batch.add_column(sa.Column("template_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_volume_template", "vm_template", ["template_id"], ["id"])
        batch.create_index("ix_volume_template_id", ["template_id"])
    op.create_table(
        "template_store_ref",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("template_id", sa.Integer(), sa.ForeignKey("vm_template.id"), nullable=False, index=True),
        sa.Column("store_id", sa.Integer(), sa.ForeignKey("image_store.id"), nullable=False, index=True),
        sa.Column("zone_id", sa.Integer(), sa.ForeignKey("zone.id"), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("status", sa.String(1024), nullable=True),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("downloaded_bytes", sa.BigInteger(), nullable=False),
        sa.Column("install_path", sa.String(1024), nullable=False),
        sa.Column("physical_size", sa.BigInteger(), nullable=False),
        sa.Column("virtual_size", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("template_id", "store_id"),
    )
    op.create_table(
        "template_spool_ref",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("template_id", sa.Integer(), sa.ForeignKey("vm_template.id"), nullable=False, index=True),
        sa.Column("pool_id", sa.Integer(), sa.ForeignKey("storage_pool.id"), nullable=False, index=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("volume_name", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("template_id", "pool_id"),
    )


def downgrade():
    op.drop_table("template_spool_ref")
    op.drop_table("template_store_ref")
    with op.batch_alter_table("volume") as batch:
        # MySQL keeps an index while a foreign key needs it: the key goes first.
        batch.drop_constraint("fk_volume_template", type_="foreignkey")
        batch.drop_index("ix_volume_template_id")
        batch.drop_column("template_id")
    with op.batch_alter_table("vm_template") as batch:
        batch.drop_constraint("fk_vm_template_os_type", type_="foreignkey")
        batch.drop_column("physical_size")
        batch.drop_column("bootable")
        batch.drop_column("os_type_id")
    op.drop_table("guest_os")
    op.drop_table("guest_os_category")
