"""Usage rows and inference (payload) tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Payload (inference) tables are named by each endpoint's config and created by the
    # recorder when first written to (store/usage.py), so only the usage table is here.
    op.create_table(
        "usage_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("client_request_id", sa.String(255), nullable=True),
        sa.Column("usage_context", sa.JSON(), nullable=True),
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("endpoint_id", sa.String(32), nullable=False),
        sa.Column("served_entity", sa.String(255), nullable=True),
        sa.Column("requester", sa.String(255), nullable=False),
        sa.Column("request_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    for column in ("request_id", "endpoint_name", "requester", "request_time_ms"):
        op.create_index(op.f(f"ix_usage_records_{column}"), "usage_records", [column])


def downgrade() -> None:
    for column in ("request_id", "endpoint_name", "requester", "request_time_ms"):
        op.drop_index(op.f(f"ix_usage_records_{column}"), table_name="usage_records")
    op.drop_table("usage_records")
