"""Users, groups, service principals and endpoint permissions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_principals")),
        sa.UniqueConstraint("kind", "name", name=op.f("uq_principals_kind")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(32), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["principals.id"],
            name=op.f("fk_group_members_group_id_principals"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["principals.id"],
            name=op.f("fk_group_members_member_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "member_id", name=op.f("pk_group_members")),
    )
    op.create_index(
        op.f("ix_group_members_member_id"), "group_members", ["member_id"], unique=False
    )
    op.create_table(
        "endpoint_acl",
        sa.Column("endpoint_id", sa.String(32), nullable=False),
        sa.Column("principal_id", sa.String(32), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_acl_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_endpoint_acl_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "principal_id", name=op.f("pk_endpoint_acl")),
    )
    op.create_index(
        op.f("ix_endpoint_acl_principal_id"), "endpoint_acl", ["principal_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_endpoint_acl_principal_id"), table_name="endpoint_acl")
    op.drop_table("endpoint_acl")
    op.drop_index(op.f("ix_group_members_member_id"), table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("principals")
